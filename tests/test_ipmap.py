"""Issue 12 item 6: vipmap and the daemon's ip map commands on etc/ip_alias_map, when the site's
build has ip alias domains (VCLI_IP_ALIAS_DOMAINS=1), and what both say when it has not.

Through the installed commands (subprocesses) and a real daemon process over a socket; the file
is checked byte for byte (store.md: one `IP DOMAIN` line per mapping, in the order added).
"""

from __future__ import annotations

import json
import os

import pytest
from daemon_helpers import Client, Daemon, build_store, env_path
from storeenv import run, snapshot

SYSADMIN = "sysadmin@admin.test SysPass1"
DADMIN = "dadmin@example.test Dadmin-pw1"
ALICE = "alice@example.test pw with spaces"


@pytest.fixture()
def env(tmp_path):
    return dict(build_store(tmp_path), VCLI_IP_ALIAS_DOMAINS="1")


def _map(env) -> bytes | None:
    path = env_path(env, "etc", "ip_alias_map")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def _login(port: int, who: str) -> Client:
    c = Client(port)
    assert c.cmd(f"slogin {who}") == b"+OK \r\n", who
    return c


# --- classic vipmap -------------------------------------------------------------------------


def test_i12_06_vipmap_add_show_delete_bytes(env):
    """-a appends `IP DOMAIN`, the same pair again moves to the end, one IP may map to two
    domains, -p/-s print the lines, -d drops exactly one pair; IPv4 and IPv6."""
    for ip, dom in (("10.0.0.1", "example.test"), ("2001:db8::1", "other.test"), ("10.0.0.1", "other.test")):
        r = run(env, "vipmap", "-a", ip, dom)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
    assert _map(env) == b"10.0.0.1 example.test\n2001:db8::1 other.test\n10.0.0.1 other.test\n"
    assert os.stat(env_path(env, "etc", "ip_alias_map")).st_mode & 0o777 == 0o644
    r = run(env, "vipmap", "-a", "10.0.0.1", "EXAMPLE.test")  # re-added: moved to the end
    assert r.returncode == 0, r
    assert _map(env) == b"2001:db8::1 other.test\n10.0.0.1 other.test\n10.0.0.1 example.test\n"
    for show in ("-p", "-s"):
        r = run(env, "vipmap", show)
        assert (r.returncode, r.stdout) == (0, "2001:db8::1 other.test\n10.0.0.1 other.test\n10.0.0.1 example.test\n")
    r = run(env, "vipmap", "-d", "10.0.0.1", "other.test")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert _map(env) == b"2001:db8::1 other.test\n10.0.0.1 example.test\n"
    r = run(env, "vipmap", "-v", "-p")
    assert r.returncode == 0 and r.stdout.startswith("version: ") and r.stdout.endswith("10.0.0.1 example.test\n")
    # no temp file or lock left where qmail's tools read
    assert sorted(n for n in os.listdir(env_path(env, "etc")) if "ip_alias" in n) == [
        ".ip_alias_map.lock", "ip_alias_map"]


def test_i12_06_vipmap_bad_input_writes_nothing(env):
    """A bad IP (255), an unknown domain (245), a pair that is not there (255), a missing
    argument (usage, 255): one line on stderr (usage: the usage text) and the store unchanged."""
    run(env, "vipmap", "-a", "10.0.0.1", "example.test")
    before = snapshot(env["VPOPMAIL_DIR"])
    cases = [
        (["-a", "10.0.0.300", "example.test"], 255, "invalid IP address"),
        (["-a", "example.test", "10.0.0.2"], 255, "invalid IP address"),
        (["-a", "10.0.0.2", "nosuch.test"], 245, "nosuch.test"),
        (["-d", "10.0.0.1", "other.test"], 255, "no ip map 10.0.0.1 other.test"),
        (["-d", "1.2.3", "example.test"], 255, "invalid IP address"),
    ]
    for argv, code, text in cases:
        r = run(env, "vipmap", *argv)
        assert r.returncode == code, (argv, r)
        assert len(r.stderr.splitlines()) == 1 and text in r.stderr, (argv, r.stderr)
        assert r.stdout == ""
    for argv in ([], ["-a", "10.0.0.2"], ["-d"], ["-x"]):
        r = run(env, "vipmap", *argv)
        assert r.returncode == 255 and "vipmap: usage:" in r.stderr and r.stdout == "", (argv, r)
    assert snapshot(env["VPOPMAIL_DIR"]) == before


def test_i12_06_vipmap_without_ip_alias_domains(env):
    """A build without IP_ALIAS_DOMAINS: one line saying so, exit 255, nothing written (the C tool
    prints a six-line notice on stdout and exits 0)."""
    off = {k: v for k, v in env.items() if k != "VCLI_IP_ALIAS_DOMAINS"}
    before = snapshot(env["VPOPMAIL_DIR"])
    for argv in (["-p"], ["-a", "10.0.0.1", "example.test"], ["-d", "10.0.0.1", "example.test"]):
        r = run(off, "vipmap", *argv)
        assert r.returncode == 255 and r.stdout == "", (argv, r)
        assert r.stderr.splitlines() == [
            "Error: this vpopmail build has no ip alias domains (IP_ALIAS_DOMAINS); "
            "set ip_alias_domains (VCLI_IP_ALIAS_DOMAINS=1) if the site has them"], r.stderr
    r = run(dict(off, VCLI_IP_ALIAS_DOMAINS="0"), "vcli", "vipmap")
    assert r.returncode == 255 and "no ip alias domains" in r.stderr
    assert snapshot(env["VPOPMAIL_DIR"]) == before


def test_i12_06_vcli_vipmap_subcommand(env):
    """`vcli vipmap --add/--delete/--show`, --format json, and --dry-run changing nothing."""
    assert run(env, "vcli", "vipmap", "--add", "192.0.2.7", "example.test").returncode == 0
    r = run(env, "vcli", "vipmap", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == [{"ip": "192.0.2.7", "domain": "example.test"}]
    r = run(env, "vcli", "vipmap", "--add", "192.0.2.8", "other.test", "--dry-run")
    assert r.returncode == 0 and "ip_alias_map" in r.stdout
    assert _map(env) == b"192.0.2.7 example.test\n"
    r = run(env, "vcli", "vipmap", "--add", "not-an-ip", "other.test")
    assert r.returncode == 64 and "invalid IP address" in r.stderr
    assert run(env, "vcli", "vipmap", "--delete", "192.0.2.7", "example.test").returncode == 0
    assert _map(env) == b""


# --- the daemon -----------------------------------------------------------------------------


def test_i12_06_daemon_ip_map_replies_and_rights(env):
    """The replies of an IP_ALIAS_DOMAINS vpopmaild: get_ip_map is level 1 but system admins
    only (9.3001); add/del/show are level 3 (4.107 below); argument errors; file missing."""
    with Daemon(env, "--login-delay", "0.01") as d:
        user = _login(d.port, ALICE)
        assert user.cmd("get_ip_map 10.0.0.1") == b"-ERR 9.3001 Not Authorized\r\n"
        for cmd in ("add_ip_map 10.0.0.1 example.test", "del_ip_map 10.0.0.1 example.test", "show_ip_map"):
            assert user.cmd(cmd) == b"-ERR 4.107 Invalid Command\r\n", cmd
        qa = _login(d.port, DADMIN)
        assert qa.cmd("get_ip_map 10.0.0.1") == b"-ERR 9.3001 Not Authorized\r\n"
        assert qa.cmd("add_ip_map 10.0.0.1 example.test") == b"-ERR 4.107 Invalid Command\r\n"
        sa = _login(d.port, SYSADMIN)
        assert sa.cmd("show_ip_map") == b"+OK+\r\n.\r\n"  # no file yet
        assert sa.cmd("get_ip_map 10.0.0.1") == b"-ERR 0.3003 error\r\n"
        assert sa.cmd("del_ip_map 10.0.0.1 example.test") == b"-ERR 0.3204 error\r\n"
        assert sa.cmd("get_ip_map") == b"-ERR 37.3002 IP Required\r\n"
        assert sa.cmd("add_ip_map") == b"-ERR 32.3102 IP Required\r\n"
        assert sa.cmd("add_ip_map 10.0.0.1") == b"-ERR 13.3103 Domain Required\r\n"
        assert sa.cmd("add_ip_map 10.0.0.1 nosuch.test") == b"-ERR 38.3104 Invalid Domain\r\n"
        assert sa.cmd("add_ip_map 10.0.0.999 example.test") == b"-ERR 0.3105 error\r\n"
        assert sa.cmd("del_ip_map") == b"-ERR 37.3202 IP Required\r\n"
        assert sa.cmd("del_ip_map 10.0.0.1") == b"-ERR 13.3203 Domain Required\r\n"
        assert _map(env) is None
        assert sa.cmd("add_ip_map 10.0.0.1 example.test") == b"+OK \r\n"
        assert sa.cmd("del_ip_map 10.0.0.1 other.test") == b"+OK \r\n"  # absent pair, file there: +OK
        assert _map(env) == b"10.0.0.1 example.test\n"


def test_i12_06_daemon_without_ip_alias_domains(env):
    """Without the build option the four commands answer 33.x Not Available, no rights check."""
    off = {k: v for k, v in env.items() if k != "VCLI_IP_ALIAS_DOMAINS"}
    with Daemon(off, "--login-delay", "0.01") as d:
        user = _login(d.port, ALICE)
        assert user.cmd("get_ip_map 10.0.0.1") == b"-ERR 33.3004 Not Available\r\n"
        sa = _login(d.port, SYSADMIN)
        assert sa.cmd("get_ip_map 10.0.0.1") == b"-ERR 33.3004 Not Available\r\n"
        assert sa.cmd("add_ip_map 10.0.0.1 example.test") == b"-ERR 33.3106 Not Available\r\n"
        assert sa.cmd("del_ip_map 10.0.0.1 example.test") == b"-ERR 33.3205 Not Available\r\n"
        assert sa.cmd("show_ip_map") == b"-ERR 33.3302 Not Available\r\n"
        r = run(dict(off, VCLI_REMOTE=f"127.0.0.1:{d.port}", VCLI_LOGIN="sysadmin@admin.test",
                     VCLI_PASSWORD="SysPass1", VCLI_IP_ALIAS_DOMAINS="1"), "vipmap", "-p")
        assert r.returncode == 255 and "has no ip alias domains" in r.stderr, r
    assert _map(env) is None


def test_i12_06_net_vpopmaild_ip_map_flow(env):
    """What Net_Vpopmaild's ip map test does as a system admin: add, get, show, del, show."""
    with Daemon(env, "--login-delay", "0.01") as d:
        sa = _login(d.port, SYSADMIN)
        assert sa.cmd("add_ip_map 192.0.2.10 example.test") == b"+OK \r\n"
        assert sa.cmd("add_ip_map 2001:db8::10 other.test") == b"+OK \r\n"
        assert sa.cmd("get_ip_map 192.0.2.10") == b"+OK+\r\n192.0.2.10 example.test\r\n.\r\n"
        assert sa.cmd("show_ip_map") == b"+OK+\r\n192.0.2.10 example.test\r\n2001:db8::10 other.test\r\n.\r\n"
        assert sa.cmd("del_ip_map 192.0.2.10 example.test") == b"+OK \r\n"
        assert sa.cmd("get_ip_map 192.0.2.10") == b"-ERR 0.3003 error\r\n"
        assert sa.cmd("show_ip_map") == b"+OK+\r\n2001:db8::10 other.test\r\n.\r\n"
        assert _map(env) == b"2001:db8::10 other.test\n"


def test_i12_06_vipmap_remote(env):
    """vipmap with VCLI_REMOTE: the daemon's commands, the same output, errors and file."""
    with Daemon(env, "--login-delay", "0.01") as d:
        renv = dict(env, VCLI_REMOTE=f"127.0.0.1:{d.port}", VCLI_LOGIN="sysadmin@admin.test",
                    VCLI_PASSWORD="SysPass1")
        renv.pop("VCLI_IP_ALIAS_DOMAINS")  # the daemon's build decides, not the client's setting
        assert run(renv, "vipmap", "-a", "10.1.1.1", "example.test").returncode == 0
        assert run(renv, "vipmap", "-a", "10.1.1.2", "other.test").returncode == 0
        r = run(renv, "vipmap", "-p")
        assert (r.returncode, r.stdout) == (0, "10.1.1.1 example.test\n10.1.1.2 other.test\n"), r
        r = run(renv, "vipmap", "-a", "10.1.1.3", "nosuch.test")
        assert r.returncode == 245, r
        r = run(renv, "vipmap", "-d", "10.1.1.1", "other.test")
        assert r.returncode == 255 and "no ip map" in r.stderr, r
        assert run(renv, "vipmap", "-d", "10.1.1.1", "example.test").returncode == 0
    assert _map(env) == b"10.1.1.2 other.test\n"
