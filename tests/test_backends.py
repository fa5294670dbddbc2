"""One behaviour, two backends: the same command lines give the same output and exit codes on the
local store and through a real `vcli vpopmaild` process over a socket."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from daemon_helpers import Daemon
from storeenv import make_env, run

from vcli import flags as F
from vcli.config import load_settings
from vcli.store.store import NewUser, Store, UserChanges


@pytest.fixture(params=["local", "remote"])
def backend(request, tmp_path):
    """An env for the commands; both start from the same store (a system admin in admin.test)."""
    env = make_env(tmp_path)
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    st.add_domain("admin.test", "Admin-pm1")
    st.add_user("admin.test", NewUser("sysadmin", "SysPass1"))
    st.mod_user("sysadmin", "admin.test", UserChanges(set_flags=F.SA_ADMIN))
    if request.param == "local":
        yield env
        return
    with Daemon(env) as d:
        yield dict(env, VCLI_REMOTE=f"127.0.0.1:{d.port}", VCLI_LOGIN="sysadmin@admin.test",
                   VCLI_PASSWORD="SysPass1")


def norm(text: str) -> str:
    return re.sub(r"\$[0-9a-z]+\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+", "{HASH}", text)


def check(env, argv, code=0, out="", err=""):
    r = run(env, *argv)
    assert (r.returncode, norm(r.stdout), r.stderr) == (code, out, err), argv


def test_users_and_domains_same_on_both_backends(backend, tmp_path):
    env = backend
    vp = env["VPOPMAIL_DIR"]
    check(env, ["vadddomain", "example.test", "Pm-pass1"])
    check(env, ["vadduser", "-c", "Bob Smith", "bob@example.test", "Bob-pass1"])
    check(env, ["vadduser", "carol@example.test", "Carol-pw1"])
    check(env, ["vmoduser", "-p", "-s", "-w", "-d", "-q", "7000000", "bob@example.test"])
    created = time.strftime("%a %b %e %H:%M:%S %Y",
                            time.localtime(os.stat(f"{vp}/domains/example.test/bob/lastauth").st_mtime))
    check(env, ["vuserinfo", "bob@example.test"], out=(
        "name:   bob\npasswd: {HASH}\nclear passwd: \ncomment/gecos: Bob Smith\nuid:    1\ngid:    2055\n"
        "flags:  2055\ngecos: Bob Smith\nlimits:\n        password can not be changed by user\n"
        "        pop access closed\n        webmail access closed\n        smtp access is closed\n"
        f"dir:       {vp}/domains/example.test/bob\nquota:     7000000S\nusage:     0%\n"
        f"account created: {created}\nlast auth: Never logged in\n"))
    check(env, ["vuserinfo", "-n", "-q", "-D", "example.test"], out=(
        "------------------------------------------\nbob\n7000000S\n"
        "------------------------------------------\ncarol\nNOQUOTA\n"
        "------------------------------------------\npostmaster\nNOQUOTA\n"))
    check(env, ["vuserinfo", "-C", "-D", "example.test"], out="------------------------------------------\n" * 3)
    check(env, ["vmoduser", "-x", "-a", "carol@example.test"])
    check(env, ["vuserinfo", "-g", "carol@example.test"], out="4096\n")
    check(env, ["vpasswd", "carol@example.test", "New-pass1"])
    check(env, ["vsetuserquota", "example.test", "10M"])
    check(env, ["vuserinfo", "-q", "postmaster@example.test"], out="10485760S\n")
    check(env, ["vaddaliasdomain", "example.test", "alias.test"])
    check(env, ["vdominfo", "alias.test"], out=(
        f"domain: example.test\nuid:    {env_uid()}\ngid:    {env_gid()}\ndir:    {vp}/domains/example.test\n"
        "users:  3\nalias: alias.test\n"))
    check(env, ["vdominfo", "-n"], out="admin.test\n\nalias.test (alias of example.test)\n\nexample.test\n\n")
    check(env, ["valias", "-i", "bob@example.test", "info@example.test"])
    check(env, ["valias", "-i", "&carol@elsewhere.test", "info@example.test"])
    check(env, ["valias", "example.test"],
          out="info@example.test -> bob@example.test\ninfo@example.test -> &carol@elsewhere.test\n")
    check(env, ["valias", "-n", "example.test"], out="info\n")
    check(env, ["valias", "-d", "info@example.test"])
    check(env, ["vdeluser", "carol@example.test"])
    check(env, ["vdeldomain", "example.test"], code=1,
          err="Warning: Alias domains exist: alias.test; use -f to force delete of domain and all aliases\n")
    check(env, ["vdeldomain", "-f", "example.test"], out="Warning: Alias domains deleted:\n   alias.test\n")
    check(env, ["vdominfo", "-n"], out="admin.test\n\n")


def env_uid() -> int:
    return load_settings({"vpopmail_dir": "/"}).vpopmail_uid


def env_gid() -> int:
    return load_settings({"vpopmail_dir": "/"}).vpopmail_gid


def test_errors_same_on_both_backends(backend):
    env = backend
    check(env, ["vadddomain", "example.test", "Pm-pass1"])
    check(env, ["vadduser", "bob@example.test", "Bob-pass1"])
    check(env, ["vadduser", "bob@example.test", "Bob-pass1"], code=255, err="Error: User already exists\n")
    check(env, ["vadduser", "zed@nodomain.test", "Zed-pass1"], code=255, err="Error: Domain does not exist\n")
    check(env, ["vuserinfo", "nobody@example.test"], code=255, err="no such user nobody@example.test\n")
    check(env, ["vuserinfo", "a@nodomain.test"], code=255, err="no such user a@nodomain.test\n")
    check(env, ["vmoduser", "-a", "nobody@example.test"], code=255, err="no such user nobody@example.test\n")
    check(env, ["vdeluser", "nobody@example.test"], code=246, err="Error: User does not exist\n")
    check(env, ["vpasswd", "nobody@example.test", "Xyz-pass1"], code=255, err="Error: Illegal username\n")
    check(env, ["vadduser", "bad user@example.test", "Pw-pass1"], code=255, err="Error: Illegal username\n")
    check(env, ["vadddomain", "example.test", "Pm-pass1"], code=243, err="Error: Domain already exists\n")
    check(env, ["vdeldomain", "nodomain.test"], code=245, err="Error: Domain does not exist\n")
    check(env, ["vmoduser", "-d", "bob@example.test"])
    check(env, ["vpasswd", "bob@example.test", "Other-pass1"], code=255, err="Error: Illegal username\n")


def test_json_same_on_both_backends(backend):
    env = backend
    check(env, ["vadddomain", "example.test", "Pm-pass1"])
    check(env, ["vadduser", "-q", "5M", "bob@example.test", "Bob-pass1"])
    r = run(env, "vcli", "vuserinfo", "bob@example.test", "-o", "json")
    doc = json.loads(r.stdout)
    doc.pop("passwd")
    assert doc == {"address": "bob@example.test", "name": "bob", "domain": "example.test", "clear": None,
                   "uid": "1", "gid": 0, "flags": 0, "flag_names": [], "domain_flags": [], "gecos": "bob",
                   "dir": f"{env['VPOPMAIL_DIR']}/domains/example.test/bob", "quota": "5242880S",
                   "created": doc["created"], "last_auth": None, "last_auth_ip": None,
                   "usage": {"bytes": 0, "messages": 0, "percent": 0}}
    assert doc["created"]


def test_bulk_add_over_one_connection(backend, tmp_path):
    env = backend
    check(env, ["vadddomain", "example.test", "Pm-pass1"])
    feed = tmp_path / "users.csv"
    feed.write_text("address,password,quota,comment\n" +
                    "".join(f"u{i:03d}@example.test,Pw-{i:04d}x,1M,User {i}\n" for i in range(30)))
    r = run(env, "vcli", "vadduser", "--from-file", str(feed))
    assert (r.returncode, r.stderr) == (0, "")
    check(env, ["vuserinfo", "-c", "-q", "u017@example.test"], out="User 17\n1048576S\n")
    r = run(env, "vcli", "vuserinfo", "-D", "example.test", "-o", "json")
    assert len(json.loads(r.stdout)) == 31
