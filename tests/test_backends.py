"""Issue 13 item 7, the backend matrix: one behaviour on every auth module and both sides of the
wire.  The same command lines give the same stdout, stderr and exit code on a cdb, a MySQL and a
PostgreSQL site (tests/sqlenv.py: the site files a real install has, a database of the session's
private servers of tests/sqlservers.py), run locally and through a real `vcli vpopmaild` process
serving that site over a socket.  Ids read `<module>-<side>`, e.g. `mysql-remote`.

Only what a module may legitimately differ in is masked: password hashes (salted) and times; and
the uid field, which vpopmail itself writes as 1 in a vpasswd line but 0 into an SQL row (sql.md
§5 pw_uid), while over the wire it is always 1 (vpopmaild's user_info does not carry it).
Each test also looks at the module's own storage (vpasswd lines, or the `vpopmail` table) so a
row that passes on "mysql" really lives in MySQL.  The cdb file formats stay in the cdb-only
tests (test_store_*.py, test_formats.py)."""

from __future__ import annotations

import calendar
import csv
import io
import json
import os
import re
import time

import pytest
from daemon_helpers import Daemon
from sqlenv import make_sql_env
from storeenv import run

from vcli import flags as F
from vcli.config import load_settings
from vcli.store.store import NewUser, Store, UserChanges

# the modules the matrix runs on: each one a site as its build lays it out
MODULES = ("cdb", "mysql", "pgsql")
SIDES = ("local", "remote")
SERVER_FIXTURE = {"mysql": "mariadb", "pgsql": "postgres"}

ASCTIME = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4}")


class Site:
    """One row of the matrix: the env the commands run with, and where the users really live."""

    def __init__(self, module: str, side: str, env: dict, db=None):
        self.module, self.side, self.env, self.db = module, side, env, db
        self.vp = env["VPOPMAIL_DIR"]
        # vuserinfo's uid: line (see the module docstring)
        self.uid_field = "0" if module != "cdb" and side == "local" else "1"

    def stored(self, domain: str) -> list[tuple[str, str]]:
        """(name, quota) of every user record of `domain`, read from the module's own storage."""
        if self.module == "cdb":
            path = os.path.join(self.vp, "domains", domain, "vpasswd")
            if not os.path.exists(path):
                return []
            with open(path) as f:
                return sorted((ln.split(":")[0], ln.rstrip("\n").split(":")[6]) for ln in f if ln.strip())
        assert not os.path.exists(os.path.join(self.vp, "domains", domain, "vpasswd")), "a vpasswd on an SQL site"
        return sorted(self.db.query("SELECT pw_name, pw_shell FROM vpopmail WHERE pw_domain = %s", (domain,)))


def rows(known: dict[str, str] | None = None) -> list:
    """The matrix ids; `known` maps a module to a failure of it found here and not fixed yet: its
    rows are strict xfails (they fail the run the day they pass, so the mark comes off)."""
    known = known or {}
    return [pytest.param(f"{m}-{s}", marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=known[m])) if m in known
            else f"{m}-{s}" for m in MODULES for s in SIDES]


@pytest.fixture(params=rows())
def site(request, tmp_path):
    """A fresh site of the row's module holding a system admin (sysadmin@admin.test, made through
    the store library: fast, the commands under test come after); for `remote` the env points the
    commands at a daemon serving it."""
    module, side = request.param.split("-")
    db = request.getfixturevalue(SERVER_FIXTURE[module]).new_database() if module != "cdb" else None
    env = make_sql_env(tmp_path, db)
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    assert st.auth.name == module, "the site files name the row's module"
    st.add_domain("admin.test", "Admin-pm1")
    st.add_user("admin.test", NewUser("sysadmin", "SysPass1"))
    st.mod_user("sysadmin", "admin.test", UserChanges(set_flags=F.SA_ADMIN))
    getattr(st.auth, "close", lambda: None)()  # the SQL module's connections
    if side == "local":
        yield Site(module, side, env, db)
        return
    with Daemon(env) as d:
        yield Site(module, side, dict(env, VCLI_REMOTE=f"127.0.0.1:{d.port}", VCLI_LOGIN="sysadmin@admin.test",
                                      VCLI_PASSWORD="SysPass1"), db)


def norm(text: str) -> str:
    text = re.sub(r"\$[0-9a-z]+\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+", "{HASH}", text)
    return ASCTIME.sub("{TIME}", text)


def check(site: Site, argv, code=0, out="", err=""):
    r = run(site.env, *argv)
    assert (r.returncode, norm(r.stdout), r.stderr) == (code, out, err), (site.module, site.side, argv)
    return r


def asctimes(text: str) -> list[float]:
    return [calendar.timegm(time.strptime(t, "%a %b %d %H:%M:%S %Y")) - _utc_offset()
            for t in ASCTIME.findall(text)]


def _utc_offset() -> float:
    return -time.timezone if not time.localtime().tm_isdst else -time.altzone


def env_ids() -> tuple[int, int]:
    s = load_settings({"vpopmail_dir": "/"})
    return s.vpopmail_uid, s.vpopmail_gid


def test_i13_07_users_and_domains_same_on_every_backend(site):
    vp = site.vp
    uid, gid = env_ids()
    check(site, ["vadddomain", "example.test", "Pm-pass1"])
    t0 = time.time()
    check(site, ["vadduser", "-c", "Bob Smith", "bob@example.test", "Bob-pass1"])
    t1 = time.time()
    check(site, ["vadduser", "carol@example.test", "Carol-pw1"])
    check(site, ["vmoduser", "-p", "-s", "-w", "-d", "-q", "7000000", "bob@example.test"])
    r = check(site, ["vuserinfo", "bob@example.test"], out=(
        "name:   bob\npasswd: {HASH}\nclear passwd: \ncomment/gecos: Bob Smith\n"
        f"uid:    {site.uid_field}\ngid:    2055\n"
        "flags:  2055\ngecos: Bob Smith\nlimits:\n        password can not be changed by user\n"
        "        pop access closed\n        webmail access closed\n        smtp access is closed\n"
        f"dir:       {vp}/domains/example.test/bob\nquota:     7000000S\nusage:     0%\n"
        "account created: {TIME}\nlast auth: Never logged in\n"))
    (created,) = asctimes(r.stdout)
    assert int(t0) - 1 <= created <= t1 + 1, "account created: is the time vadduser ran"
    check(site, ["vuserinfo", "-n", "-q", "-D", "example.test"], out=(
        "------------------------------------------\nbob\n7000000S\n"
        "------------------------------------------\ncarol\nNOQUOTA\n"
        "------------------------------------------\npostmaster\nNOQUOTA\n"))
    check(site, ["vuserinfo", "-C", "-D", "example.test"], out="------------------------------------------\n" * 3)
    check(site, ["vmoduser", "-x", "-a", "carol@example.test"])
    check(site, ["vuserinfo", "-g", "carol@example.test"], out="4096\n")
    check(site, ["vpasswd", "carol@example.test", "New-pass1"])
    check(site, ["vverifypw", "carol@example.test", "New-pass1"], out="User authenticated.\n")
    check(site, ["vsetuserquota", "example.test", "10M"])
    check(site, ["vuserinfo", "-q", "postmaster@example.test"], out="10485760S\n")
    assert site.stored("example.test") == [("bob", "10485760S"), ("carol", "10485760S"), ("postmaster", "10485760S")]
    check(site, ["vaddaliasdomain", "example.test", "alias.test"])
    check(site, ["vdominfo", "alias.test"], out=(
        f"domain: example.test\nuid:    {uid}\ngid:    {gid}\ndir:    {vp}/domains/example.test\n"
        "users:  3\nalias: alias.test\n"))
    check(site, ["vuserinfo", "-n", "bob@alias.test"], out="bob\n")
    check(site, ["vdominfo", "-n"], out="admin.test\n\nalias.test (alias of example.test)\n\nexample.test\n\n")
    check(site, ["valias", "-i", "bob@example.test", "info@example.test"])
    check(site, ["valias", "-i", "&carol@elsewhere.test", "info@example.test"])
    check(site, ["valias", "example.test"],
          out="info@example.test -> bob@example.test\ninfo@example.test -> &carol@elsewhere.test\n")
    check(site, ["valias", "-n", "example.test"], out="info\n")
    check(site, ["valias", "-d", "info@example.test"])
    check(site, ["vdeluser", "carol@example.test"])
    assert [n for n, _ in site.stored("example.test")] == ["bob", "postmaster"]
    check(site, ["vdeldomain", "example.test"], code=1,
          err="Warning: Alias domains exist: alias.test; use -f to force delete of domain and all aliases\n")
    check(site, ["vdeldomain", "-f", "example.test"], out="Warning: Alias domains deleted:\n   alias.test\n")
    check(site, ["vdominfo", "-n"], out="admin.test\n\n")
    assert site.stored("example.test") == []


def test_i13_07_errors_same_on_every_backend(site):
    check(site, ["vadddomain", "example.test", "Pm-pass1"])
    check(site, ["vadduser", "bob@example.test", "Bob-pass1"])
    check(site, ["vadduser", "bob@example.test", "Bob-pass1"], code=255, err="Error: User already exists\n")
    check(site, ["vadduser", "zed@nodomain.test", "Zed-pass1"], code=255, err="Error: Domain does not exist\n")
    check(site, ["vuserinfo", "nobody@example.test"], code=255, err="no such user nobody@example.test\n")
    check(site, ["vuserinfo", "a@nodomain.test"], code=255, err="no such user a@nodomain.test\n")
    check(site, ["vmoduser", "-a", "nobody@example.test"], code=255, err="no such user nobody@example.test\n")
    check(site, ["vdeluser", "nobody@example.test"], code=246, err="Error: User does not exist\n")
    check(site, ["vpasswd", "nobody@example.test", "Xyz-pass1"], code=255, err="Error: Illegal username\n")
    check(site, ["vadduser", "bad user@example.test", "Pw-pass1"], code=255, err="Error: Illegal username\n")
    check(site, ["vadddomain", "example.test", "Pm-pass1"], code=243, err="Error: Domain already exists\n")
    check(site, ["vdeldomain", "nodomain.test"], code=245, err="Error: Domain does not exist\n")
    check(site, ["vmoduser", "-d", "bob@example.test"])
    check(site, ["vpasswd", "bob@example.test", "Other-pass1"], code=255, err="Error: Illegal username\n")
    check(site, ["vverifypw", "bob@example.test", "wrong"], code=255, err="Error: authentication failed!\n")
    assert site.stored("example.test") == [("bob", "NOQUOTA"), ("postmaster", "NOQUOTA")]


def test_i13_07_json_same_on_every_backend(site):
    check(site, ["vadddomain", "example.test", "Pm-pass1"])
    check(site, ["vadduser", "-q", "5M", "bob@example.test", "Bob-pass1"])
    r = run(site.env, "vcli", "vuserinfo", "bob@example.test", "-o", "json")
    doc = json.loads(r.stdout)
    doc.pop("passwd")
    assert doc == {"address": "bob@example.test", "name": "bob", "domain": "example.test", "clear": None,
                   "uid": site.uid_field, "gid": 0, "flags": 0, "flag_names": [], "domain_flags": [], "gecos": "bob",
                   "dir": f"{site.vp}/domains/example.test/bob", "quota": "5242880S",
                   "created": doc["created"], "last_auth": None, "last_auth_ip": None,
                   "usage": {"bytes": 0, "messages": 0, "percent": 0}}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", doc["created"])


def test_i13_07_output_formats_same_on_every_backend(site):
    """The vcli subcommands in table, csv and json (what scripts parse) agree on every module."""
    vp = site.vp
    uid, gid = env_ids()
    d = f"{vp}/domains/example.test"
    check(site, ["vcli", "vadddomain", "example.test", "Pm-pass1"])
    check(site, ["vcli", "vadduser", "-c", "Bob Smith", "-q", "5M", "bob@example.test", "Bob-pass1"])
    check(site, ["vcli", "vaddaliasdomain", "example.test", "alias.test"])
    check(site, ["vcli", "valias", "-i", "bob@example.test", "info@example.test"])
    check(site, ["vcli", "vuserinfo", "-D", "example.test", "-o", "csv"], out=(
        "address,gecos,quota,flags,flag_names,dir\n"
        f"bob@example.test,Bob Smith,5242880S,0,,{d}/bob\n"
        f"postmaster@example.test,Postmaster,NOQUOTA,0,,{d}/postmaster\n"))
    check(site, ["vcli", "vuserinfo", "bob@alias.test", "-o", "csv"], out=(
        f"address,gecos,quota,flags,flag_names,dir\nbob@example.test,Bob Smith,5242880S,0,,{d}/bob\n"))
    w = len(f"{d}/postmaster")
    check(site, ["vcli", "vuserinfo", "-D", "example.test", "-o", "table"], out=(
        f"address                  gecos       quota       flags  flag_names    dir\n"
        f"-----------------------  ----------  --------  -------  ------------  {'-' * w}\n"
        f"bob@example.test         Bob Smith   5242880S        0                {d}/bob\n"
        f"postmaster@example.test  Postmaster  NOQUOTA         0                {d}/postmaster\n"))
    check(site, ["vcli", "vdominfo", "-o", "csv"], out=(
        "domain,real,users,uid,gid,dir,aliases\n"
        f"admin.test,admin.test,2,{uid},{gid},{vp}/domains/admin.test,\n"
        f"alias.test,example.test,2,{uid},{gid},{d},\n"
        f"example.test,example.test,2,{uid},{gid},{d},alias.test\n"))
    one = json.loads(run(site.env, "vcli", "vdominfo", "example.test", "-o", "json").stdout)
    assert one == {"domain": "example.test", "real": "example.test", "alias_of": None, "uid": uid, "gid": gid,
                    "dir": d, "users": 2, "aliases": ["alias.test"]}
    users = json.loads(run(site.env, "vcli", "vuserinfo", "-D", "example.test", "-o", "json").stdout)
    assert [(u["address"], u["quota"], u["gecos"]) for u in users] == [
        ("bob@example.test", "5242880S", "Bob Smith"), ("postmaster@example.test", "NOQUOTA", "Postmaster")]
    check(site, ["vcli", "valias", "example.test", "-o", "csv"], out="alias,line\ninfo@example.test,bob@example.test\n")
    r = run(site.env, "vcli", "vmoddomlimits", "example.test", "-o", "csv")
    limits = next(csv.DictReader(io.StringIO(r.stdout)))
    assert (r.returncode, limits["domain"], limits["maxpopaccounts"], limits["disable_pop"]) == (
        0, "example.test", "-1", "False")
    check(site, ["vcli", "vmoduser", "-q", "20M", "example.test"])
    check(site, ["vcli", "vuserinfo", "-D", "example.test", "-o", "csv"], out=(
        "address,gecos,quota,flags,flag_names,dir\n"
        f"bob@example.test,Bob Smith,20971520S,0,,{d}/bob\n"
        f"postmaster@example.test,Postmaster,20971520S,0,,{d}/postmaster\n"))
    check(site, ["vcli", "vdeluser", "bob@example.test"])
    check(site, ["vcli", "vuserinfo", "bob@example.test", "-o", "json"], code=255,
          err="no such user bob@example.test\n")
    assert site.stored("example.test") == [("postmaster", "20971520S")]


def test_i13_07_bulk_add_same_on_every_backend(site, tmp_path):
    check(site, ["vadddomain", "example.test", "Pm-pass1"])
    feed = tmp_path / "users.csv"
    feed.write_text("address,password,quota,comment\n" +
                    "".join(f"u{i:03d}@example.test,Pw-{i:04d}x,1M,User {i}\n" for i in range(30)))
    r = run(site.env, "vcli", "vadduser", "--from-file", str(feed))
    assert (r.returncode, r.stderr) == (0, "")
    check(site, ["vuserinfo", "-c", "-q", "u017@example.test"], out="User 17\n1048576S\n")
    check(site, ["vverifypw", "u029@example.test", "Pw-0029x"], out="User authenticated.\n")
    r = run(site.env, "vcli", "vuserinfo", "-D", "example.test", "-o", "json")
    assert len(json.loads(r.stdout)) == 31
    assert len(site.stored("example.test")) == 31
    r = run(site.env, "vcli", "vdominfo", "example.test", "-o", "json")
    assert json.loads(r.stdout)["users"] == 31


def test_i13_07_a_consistent_site_checks_clean_on_every_backend(site):
    """`vcli check` after a mix of changes finds nothing to repair, whichever module holds the users."""
    # check reads the store where it runs: on a remote row, beside the daemon (after its changes)
    env = {k: v for k, v in site.env.items() if k not in ("VCLI_REMOTE", "VCLI_LOGIN", "VCLI_PASSWORD")}
    check(site, ["vadddomain", "example.test", "Pm-pass1"])
    for i in range(5):
        check(site, ["vadduser", f"u{i}@example.test", "Pw-pass1"])
    check(site, ["vdeluser", "u2@example.test"])
    check(site, ["vaddaliasdomain", "example.test", "alias.test"])
    r = run(env, "vcli", "check")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
