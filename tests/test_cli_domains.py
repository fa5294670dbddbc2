"""Golden tests of vadddomain, vdeldomain, vaddaliasdomain and valias through the installed commands:
stdout byte for byte, exit status, and every file they leave (spec/store.md §2, §5, §6, §10, §11)."""

from __future__ import annotations

import os

import pytest
from cli_helpers import (
    GID,
    HASH_RE,
    UID,
    CliStore,
    assign_cdb,
    cdb_records,
    verify,
    vpasswd_cdb,
)

FRESH_DIR_CONTROL = b"1\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n"
REREAD_DIR_CONTROL = b"%d\n0\n3\n0 0 0\n61 61 61\n0 2 2\n0 0 0\n\n"


@pytest.fixture()
def st(base):
    return CliStore(base)


def assign_line(st: CliStore, name: str, real: str) -> bytes:
    return f"+{name}-:{real}:{UID}:{GID}:{st.ddir(real)}:-::\n".encode()


def test_vadddomain_golden_tree(st):
    r = st.run("vadddomain", "example.test", "Pm-pass1")
    assert (r.rc, r.out, r.err) == (0, "", "")
    d = st.ddir("example.test")
    snap = st.snapshot()
    expected_modes = {
        "qmail": 0o40755, "qmail/users": 0o40755, "qmail/control": 0o40755,
        "qmail/users/assign": 0o100644, "qmail/users/assign.lock": 0o100600, "qmail/users/cdb": 0o100644,
        "qmail/control/rcpthosts": 0o100644, "qmail/control/rcpthosts.lock": 0o100600,
        "qmail/control/virtualdomains": 0o100644, "qmail/control/virtualdomains.lock": 0o100600,
        "qmail/control/locals": 0o100644, "qmail/control/locals.lock": 0o100600,
        "vpopmail": 0o40755, "vpopmail/etc": 0o40755,
        "vpopmail/etc/vlimits.default": 0o100644, "vpopmail/etc/password_strength.conf": 0o100644,
        "vpopmail/domains": 0o40700,
        "vpopmail/domains/.dir-control": 0o100600, "vpopmail/domains/.dir-control.lock": 0o100600,
        "vpopmail/domains/example.test": 0o40700,
        "vpopmail/domains/example.test/.dir-control": 0o100600,
        "vpopmail/domains/example.test/.qmail-default": 0o100600,
        "vpopmail/domains/example.test/.vpasswd.lock": 0o100600,
        "vpopmail/domains/example.test/vpasswd": 0o100600,
        "vpopmail/domains/example.test/vpasswd.cdb": 0o100600,
        "vpopmail/domains/example.test/postmaster": 0o40700,
        "vpopmail/domains/example.test/postmaster/Maildir": 0o40700,
        "vpopmail/domains/example.test/postmaster/Maildir/cur": 0o40700,
        "vpopmail/domains/example.test/postmaster/Maildir/new": 0o40700,
        "vpopmail/domains/example.test/postmaster/Maildir/tmp": 0o40700,
        "vpopmail/domains/example.test/postmaster/lastauth": 0o100600,
    }
    # the tmp dirs of the fixture itself are not the store's business
    got = {k: v[0] for k, v in snap.items() if k.startswith(("qmail", "vpopmail"))}
    assert {k: oct(v) for k, v in got.items()} == {k: oct(v) for k, v in expected_modes.items()}

    assign = snap["qmail/users/assign"][1]
    assert assign == assign_line(st, "example.test", "example.test") + b".\n"
    assert snap["qmail/users/cdb"][1] == assign_cdb(assign)
    assert cdb_records(snap["qmail/users/cdb"][1]) == [
        (b"!example.test-", b"example.test\x0089\x0089\x00" + str(d).encode() + b"\x00-\x00"), (b"", b"-")]
    assert snap["qmail/control/rcpthosts"][1] == b"example.test\n"
    assert snap["qmail/control/virtualdomains"][1] == b"example.test:example.test\n"
    assert snap["qmail/control/locals"][1] == b""
    assert snap["vpopmail/domains/.dir-control"][1] == FRESH_DIR_CONTROL
    assert snap["vpopmail/domains/example.test/.dir-control"][1] == FRESH_DIR_CONTROL
    assert snap["vpopmail/domains/example.test/.qmail-default"][1] == \
        f"| {st.vp}/bin/vdelivermail '' delete\n".encode()
    assert snap["vpopmail/domains/example.test/.vpasswd.lock"][1] == b""
    assert snap["vpopmail/domains/example.test/postmaster/lastauth"][1] == b"0.0.0.0"

    vp = snap["vpopmail/domains/example.test/vpasswd"][1]
    f = vp.decode().rstrip("\n").split(":")
    assert vp.count(b"\n") == 1 and vp.endswith(b"\n")
    assert f[0] == "postmaster" and HASH_RE.fullmatch(f[1]) and verify("Pm-pass1", f[1])
    assert f[2:] == ["1", "0", "Postmaster", f"{d}/postmaster", "NOQUOTA"]
    assert snap["vpopmail/domains/example.test/vpasswd.cdb"][1] == vpasswd_cdb(vp)

    if os.geteuid() == 0:  # domain files belong to the domain's uid:gid, qmail's to root
        for rel in got:
            owner = os.lstat(st.base / rel)
            want = (UID, GID) if rel.startswith("vpopmail/domains") else (0, 0)
            assert (owner.st_uid, owner.st_gid) == want, rel


def test_vadddomain_quota_catchall_and_second_domain(st):
    st.ok("vadddomain", "example.test", "Pm-pass1")
    r = st.run("vadddomain", "-q", "1000000", "-e", "postmaster", "tmp.test", "Pm-pass2")
    assert (r.rc, r.out, r.err) == (0, "", "")
    d = st.ddir("tmp.test")
    assert (d / ".qmail-default").read_bytes() == f"| {st.vp}/bin/vdelivermail '' {d}/postmaster\n".encode()
    assert st.fields("tmp.test", "postmaster")[6] == "1000000S"
    ms = d / "postmaster" / "Maildir" / "maildirsize"
    assert ms.read_bytes() == b"1000000S\n0 0\n" and oct(ms.stat().st_mode) == "0o100600"
    # sorted insertion (spec/store.md §5.3) and the re-read .dir-control quirk
    assert (st.qm / "users" / "assign").read_bytes() == (
        assign_line(st, "example.test", "example.test") + assign_line(st, "tmp.test", "tmp.test") + b".\n")
    assert (st.qm / "control" / "rcpthosts").read_bytes() == b"example.test\ntmp.test\n"
    assert (st.qm / "control" / "virtualdomains").read_bytes() == b"example.test:example.test\ntmp.test:tmp.test\n"
    assert (st.vp / "domains" / ".dir-control").read_bytes() == REREAD_DIR_CONTROL % 2
    assert (d / ".dir-control").read_bytes() == FRESH_DIR_CONTROL
    # -e with an address
    st.ok("vadddomain", "-e", "someone@elsewhere.test", "fwd.test", "Pm-pass3")
    assert (st.ddir("fwd.test") / ".qmail-default").read_bytes() == \
        f"| {st.vp}/bin/vdelivermail '' someone@elsewhere.test\n".encode()


def test_vadddomain_sort_key_moves_last_two_labels_first(st):
    for dom in ("b.example.test", "example.test", "a.other.test", "zz.test"):
        st.call_ok("vadddomain", dom, "Pm-pass1")
    names = [ln.split(b":")[0] for ln in (st.qm / "users" / "assign").read_bytes().splitlines()]
    # sort keys (last two labels first): example.test.b, example.test, other.test.a, zz.test
    assert names == [b"+example.test-", b"+b.example.test-", b"+a.other.test-", b"+zz.test-", b"."]
    assert (st.qm / "control" / "rcpthosts").read_bytes() == b"example.test\nb.example.test\na.other.test\nzz.test\n"


def test_vadddomain_random_upper_case_and_errors(st):
    r = st.run("vadddomain", "-r10", "rnd.test")
    assert r.rc == 0 and r.err == ""
    assert r.out.startswith("Random password: ") and r.out.endswith("\n") and r.out.count("\n") == 1
    pw = r.out[len("Random password: "):-1]
    assert len(pw) == 10 and set(pw) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@!#%*")
    assert verify(pw, st.fields("rnd.test", "postmaster")[1])

    st.ok("vadddomain", "UPPER.Test", "Pm-pass1")
    assert st.ddir("upper.test").is_dir()

    r = st.run("vadddomain", "rnd.test", "x")
    assert (r.rc, r.out, r.err) == (243, "", "Error: Domain already exists\n")
    r = st.run("vadddomain", "bad_domain!.test", "x")
    assert (r.rc, r.out, r.err) == (244, "", "Error: Invalid domain name\n")
    r = st.run("vadddomain", "-r", "x.test", "pw")
    assert r.rc == 255 and r.err == "Error: don't use -r option when giving password on command line\n"
    r = st.run("vadddomain")
    assert r.rc == 255 and r.out == ""
    assert r.err.startswith("vadddomain: usage: vadddomain [options] virtual_domain [postmaster password]\n")
    r = st.run("vadddomain", "-v")
    assert r.out == "version: 5.6.13\n" and r.rc == 255


def test_vadddomain_weak_password_creates_nothing(st):
    (st.vp / "etc" / "password_strength.conf").write_text("Length >= 8\n")
    before = st.snapshot()
    r = st.run("vadddomain", "weak.test", "Short-1")
    assert r.rc == 186 and r.out == ""
    assert r.err.splitlines()[0] == "Error: (vadduser) password requires more characters "
    assert st.snapshot() == before


def test_vadddomain_password_prompt_from_stdin(st):
    r = st.run("vadddomain", "prompt.test", input="Pm-pass1\nPm-pass1\n")
    assert r.rc == 0 and r.out == ""
    assert r.err == "Please enter password for postmaster: enter password again: "
    assert verify("Pm-pass1", st.fields("prompt.test", "postmaster")[1])


def test_vdeldomain(st):
    st.call_ok("vadddomain", "example.test", "Pm-pass1")
    st.call_ok("vadddomain", "tmp.test", "Pm-pass1")
    st.call_ok("vaddaliasdomain", "tmp.test", "tmpalias2.test")
    before = st.snapshot()
    r = st.run("vdeldomain", "tmp.test")
    assert r.rc == 1 and r.out == ""
    assert r.err == ("Warning: Alias domains exist: tmpalias2.test; use -f to force delete of domain and all aliases\n")
    assert st.snapshot() == before
    r = st.run("vdeldomain", "-f", "TMP.TEST")
    assert (r.rc, r.out, r.err) == (0, "Warning: Alias domains deleted:\n   tmpalias2.test\n", "")
    assert not st.ddir("tmp.test").exists()
    assign = (st.qm / "users" / "assign").read_bytes()
    assert assign == assign_line(st, "example.test", "example.test") + b".\n"
    assert (st.qm / "users" / "cdb").read_bytes() == assign_cdb(assign)
    assert (st.qm / "control" / "rcpthosts").read_bytes() == b"example.test\n"
    assert (st.qm / "control" / "virtualdomains").read_bytes() == b"example.test:example.test\n"
    dc = (st.vp / "domains" / ".dir-control").read_bytes()
    assert dc.split(b"\n")[0] == b"1"
    r = st.run("vdeldomain", "nodomain.test")
    assert (r.rc, r.out, r.err) == (245, "", "Error: Domain does not exist\n")
    r = st.run("vdeldomain")
    assert r.rc == 255 and r.err.startswith("vdeldomain: usage: [options] domain_name\n")


def test_vaddaliasdomain_either_order_and_errors(st):
    st.call_ok("vadddomain", "example.test", "Pm-pass1")
    r = st.run("vaddaliasdomain", "example.test", "alias.test")
    assert (r.rc, r.out, r.err) == (0, "", "")
    r = st.run("vaddaliasdomain", "alias2.test", "example.test")  # swapped: the existing one is real
    assert (r.rc, r.out, r.err) == (0, "", "")
    assign = (st.qm / "users" / "assign").read_bytes()
    assert assign == (assign_line(st, "alias.test", "example.test") + assign_line(st, "alias2.test", "example.test")
                      + assign_line(st, "example.test", "example.test") + b".\n")
    assert (st.qm / "users" / "cdb").read_bytes() == assign_cdb(assign)
    assert (st.qm / "control" / "rcpthosts").read_bytes() == b"alias.test\nalias2.test\nexample.test\n"
    assert (st.qm / "control" / "virtualdomains").read_bytes() == (
        b"alias.test:alias.test\nalias2.test:alias2.test\nexample.test:example.test\n")
    assert not (st.vp / "domains" / "alias.test").exists()  # no directory for an alias

    before = st.snapshot()
    cases = [
        (("example.test", "alias.test"), "Error: Both domains already exist, unable to create alias.\n"),
        (("nodomain.test", "Alias3.test"),
         "Error: Neither 'nodomain.test' or 'Alias3.test'  exist, unable to create alias.\n"),
        (("example.test", "EXAMPLE.test"), "Error: real domain and alias domain are the same!\n"),
    ]
    for args, err in cases:
        r = st.run("vaddaliasdomain", *args)
        assert (r.rc, r.out, r.err) == (255, "", err), args
    r = st.run("vaddaliasdomain", "example.test")
    assert r.rc == 255 and r.err.startswith("vaddaliasdomain: usage: [options] real_domain alias_domain\n")
    r = st.run("vaddaliasdomain", "example.test", "bad!.test")
    assert (r.rc, r.err) == (244, "Error: Invalid domain name\n")
    assert st.snapshot() == before


def test_valias(st):
    st.call_ok("vadddomain", "example.test", "Pm-pass1")
    d = st.ddir("example.test")
    for line, target in (("alice@example.test", "info@example.test"), ("&bob@elsewhere.test", "info@example.test"),
                         ("carol@example.test", "Sales@Example.test"), ("x@y.test", "john.doe@example.test")):
        r = st.run("valias", "-i", line, target)
        assert (r.rc, r.out, r.err) == (0, "", "")
    f = d / ".qmail-info"
    assert f.read_bytes() == b"alice@example.test\n&bob@elsewhere.test\n" and oct(f.stat().st_mode) == "0o100600"
    assert (d / ".qmail-sales").read_bytes() == b"carol@example.test\n"
    assert (d / ".qmail-john:doe").read_bytes() == b"x@y.test\n"

    listing = ("info@example.test -> alice@example.test\ninfo@example.test -> &bob@elsewhere.test\n"
               "john.doe@example.test -> x@y.test\nsales@example.test -> carol@example.test\n")
    assert st.run("valias", "-s", "example.test").out == listing
    assert st.run("valias", "example.test").out == listing  # no option: like -s
    assert st.run("valias", "info@example.test").out == (
        "info@example.test -> alice@example.test\ninfo@example.test -> &bob@elsewhere.test\n")
    r = st.run("valias", "-n", "example.test")
    assert (r.rc, r.out) == (0, "info\njohn.doe\nsales\n")

    before = st.snapshot()
    r = st.run("valias", "-i", "alice@example.test", "info@example.test")
    assert (r.rc, r.out, r.err) == (
        255, "", "Error: alias info@example.test -> alice@example.test already exists.\n")
    r = st.run("valias", "nothere@example.test")
    assert (r.rc, r.out, r.err) == (255, "", "No aliases nothere@example.test found\n")
    r = st.run("valias", "-n", "info@example.test")
    assert (r.rc, r.out, r.err) == (255, "", "Please enter domain name only.\n")
    r = st.run("valias", "-i", "a@b.test", "x@nodomain.test")
    assert (r.rc, r.out, r.err) == (245, "", "invalid domain, not in qmail assign file\n")
    r = st.run("valias")
    assert r.rc == 255 and r.err.startswith("must supply alias email address\nvalias: usage: ")
    r = st.run("valias", "-x", "example.test")
    assert r.rc == 254 and r.err.startswith("valias: invalid option -- 'x'\n")
    r = st.run("valias", "-d", "nothere@example.test")
    assert (r.rc, r.err) == (255, "Error: No aliases nothere@example.test found\n")
    assert st.snapshot() == before

    r = st.run("valias", "-d", "john.doe@example.test")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert not (d / ".qmail-john:doe").exists()
    st.ok("valias", "-d", "info@example.test")
    st.ok("valias", "-d", "sales@example.test")
    r = st.run("valias", "example.test")
    assert (r.rc, r.out, r.err) == (255, "", "No aliases found for domain example.test\n")


def test_vadddomain_owner_and_base_dir(st):
    st.ok("vadddomain", "-i", "1234", "-g", "2345", "ids.test", "Pm-pass1")
    assert (st.qm / "users" / "assign").read_bytes() == (
        f"+ids.test-:ids.test:1234:2345:{st.ddir('ids.test')}:-::\n.\n".encode())
    if os.geteuid() == 0:
        for p in (st.ddir("ids.test"), st.ddir("ids.test") / "vpasswd", st.ddir("ids.test") / "postmaster" / "lastauth"):
            assert (os.stat(p).st_uid, os.stat(p).st_gid) == (1234, 2345), p
    other = st.base / "other"
    other.mkdir()
    st.ok("vadddomain", "-d", str(other), "based.test", "Pm-pass1")
    ddir = other / "domains" / "based.test"
    assert f"+based.test-:based.test:{UID}:{GID}:{ddir}:-::\n".encode() in (st.qm / "users" / "assign").read_bytes()
    assert st.fields_of(ddir, "postmaster")[5] == f"{ddir}/postmaster"
    st.ok("vadduser", "bob@based.test", "Bob-pw1")
    assert (ddir / "bob" / "Maildir").is_dir()
    st.ok("vdeldomain", "based.test")
    assert not ddir.exists() and (other / "domains" / ".dir-control").read_bytes().split(b"\n")[0] == b"0"


def test_vdeldomain_alias_only(st):
    st.call_ok("vadddomain", "example.test", "Pm-pass1")
    before = st.snapshot()
    st.call_ok("vaddaliasdomain", "example.test", "alias.test")
    st.call_ok("vadduser", "bob@alias.test", "Bob-pw1")
    assert st.run("vuserinfo", "-n", "-D", "alias.test").out == "-" * 42 + "\nbob\n" + "-" * 42 + "\npostmaster\n"
    st.call_ok("vdeluser", "bob@example.test")
    r = st.run("vdeldomain", "alias.test")
    assert r.t == (0, "", "")
    after = st.snapshot()
    # back to the bytes before the alias (the vpasswd/.dir-control of example.test were rewritten meanwhile)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed <= {"vpopmail/domains/example.test/vpasswd", "vpopmail/domains/example.test/vpasswd.cdb",
                       "vpopmail/domains/example.test/.dir-control"}, changed
    assert st.ddir("example.test").is_dir()
