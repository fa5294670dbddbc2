"""Run as root, the store's files belong to the domain's uid/gid, as vpopmail makes them."""

from __future__ import annotations

import os

from storeenv import make_env, run


def test_root_gives_domain_files_to_the_vpopmail_ids(tmp_path):
    assert os.geteuid() == 0, "this test checks chown behaviour and must run as root (CI does)"
    env = dict(make_env(tmp_path), VCLI_VPOPMAIL_UID="89", VCLI_VPOPMAIL_GID="89")
    assert run(env, "vadddomain", "example.test", "Pm-pass1").returncode == 0
    r = run(env, "vadduser", "-q", "1M", "bob@example.test", "Bob-pass1")
    assert r.returncode == 0, r.stderr
    assert run(env, "vmoduser", "-q", "2M", "bob@example.test").returncode == 0
    assert run(env, "valias", "-i", "bob@example.test", "info@example.test").returncode == 0
    ddir = tmp_path / "vpopmail" / "domains" / "example.test"
    owners = {}
    for dirpath, dirnames, filenames in os.walk(ddir):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            owners[os.path.relpath(p, ddir)] = (st.st_uid, st.st_gid)
    st = os.lstat(ddir)
    owners["."] = (st.st_uid, st.st_gid)
    assert "bob/Maildir/maildirsize" in owners and ".qmail-info" in owners
    assert {k: v for k, v in owners.items() if v != (89, 89)} == {}
    domains_dc = os.lstat(tmp_path / "vpopmail" / "domains" / ".dir-control")
    assert (domains_dc.st_uid, domains_dc.st_gid) == (89, 89)
    assign = tmp_path / "qmail" / "users" / "assign"
    assert b":89:89:" in assign.read_bytes()
    assert os.lstat(assign).st_uid == 0
