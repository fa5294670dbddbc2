"""Golden tests of vuserinfo and vdominfo: the exact text of spec/tools.md §4, §9 and §16,
through the installed commands; both only read (README: no side-effect rewrites)."""

from __future__ import annotations

import os

import pytest
from cli_helpers import SEPARATOR, CliStore, asctime

D = "example.test"


def created(st: CliStore, user: str, domain: str = D) -> str:
    return asctime(os.stat(st.ddir(domain) / user / "lastauth").st_mtime)


def block(st, user, *, passwd, clear="", gecos, gid, flags, limits, quota, usage, auth):
    return "".join(x + "\n" for x in [
        f"name:   {user}",
        f"passwd: {passwd}",
        f"clear passwd: {clear}",
        f"comment/gecos: {gecos}",
        "uid:    1",
        f"gid:    {gid}",
        f"flags:  {flags}",
        f"gecos: {gecos}",
        *limits,
        f"dir:       {st.ddir(D)}/{user}",
        f"quota:     {quota}",
        f"usage:     {usage}",
        *auth,
    ])


@pytest.fixture()
def users(st):
    """bob with his own flags and a quota, erin with bits only from the domain limits (spec §16)."""
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    st.call_ok("vmoduser", "-p", "-s", "-w", "-d", "-q", "7000000", "-c", "Bob Changed", "bob@example.test")
    (st.ddir(D) / ".qmailadmin-limits").write_text(
        "default_quota 10485760\ndefault_maxmsgcount 500\ndisable_pop\ndisable_password_changing\n")
    st.call_ok("vadduser", "erin@example.test", "Erin-pw1")
    return st


def test_vuserinfo_full_blocks(users):
    st = users
    before = st.snapshot()
    r = st.run("vuserinfo", "bob@example.test")
    assert (r.rc, r.err) == (0, "")
    assert r.out == block(
        st, "bob", passwd=st.fields(D, "bob")[1], gecos="Bob Changed", gid=2055, flags=2055,
        limits=["limits:", "        password can not be changed by user", "        pop access closed",
                "        webmail access closed", "        smtp access is closed"],
        quota="7000000S", usage="0%",
        auth=[f"account created: {created(st, 'bob')}", "last auth: Never logged in"])
    r = st.run("vuserinfo", "-a", "erin@example.test")
    assert r.out == block(
        st, "erin", passwd=st.fields(D, "erin")[1], gecos="erin", gid=0, flags=3,
        limits=["limits:", "        password can not be changed by user (*)", "        pop access closed (*)",
                "        * = set by domain-wide limits"],
        quota="10485760S,500C", usage="0%",
        auth=[f"account created: {created(st, 'erin')}", "last auth: Never logged in"])
    assert st.snapshot() == before  # vuserinfo only reads


def test_vuserinfo_postmaster_admin_noquota_and_last_auth(st):
    st.call_ok("vmoduser", "-a", "postmaster@example.test")
    la = st.ddir(D) / "postmaster" / "lastauth"
    la.write_bytes(b"192.0.2.7")
    os.utime(la, (1767614400, 1767614400))
    r = st.run("vuserinfo", "postmaster@example.test")
    assert r.out == block(
        st, "postmaster", passwd=st.fields(D, "postmaster")[1], gecos="Postmaster", gid=4096, flags=4096,
        limits=["limits:", "        has qmailadmin administrator access"], quota="NOQUOTA", usage="NOQUOTA",
        auth=[f"last auth: {asctime(1767614400)}", "last auth ip: 192.0.2.7"])
    la.unlink()
    st.call_ok("vmoduser", "-x", "postmaster@example.test")
    r = st.run("vuserinfo", "postmaster@example.test")
    assert r.out.endswith("flags:  0\ngecos: Postmaster\nlimits: No user limits set.\n"
                          f"dir:       {st.ddir(D)}/postmaster\nquota:     NOQUOTA\nusage:     NOQUOTA\n"
                          "last auth: Never logged in\n")


def test_vuserinfo_empty_quota(users):
    st = users
    st.call_ok("vsetuserquota", "bob@example.test", "abc")
    out = st.run("vuserinfo", "bob@example.test").out
    assert f"\ndir:       {st.ddir(D)}/bob\nquota:     \nusage:     0%\n" in out


def test_vuserinfo_selectors_fixed_order(users):
    st = users
    f = st.fields(D, "bob")
    r = st.run("vuserinfo", "-q", "-n", "-C", "-l", "-Q", "-d", "-c", "-g", "-u", "-p", "bob@example.test")
    assert (r.rc, r.err) == (0, "")
    # -C prints nothing without the clear-text field, but still selects
    assert r.out == "".join(x + "\n" for x in [
        "bob", f[1], "1", "2055", "Bob Changed", f"{st.ddir(D)}/bob", "7000000S", "0%",
        f"account created: {created(st, 'bob')}", "last auth: Never logged in"])
    assert st.run("vuserinfo", "-C", "bob@example.test").out == ""
    assert st.run("vuserinfo", "-n", "-q", "-C", "bob@example.test").out == "bob\n7000000S\n"
    r = st.run("vuserinfo", "-C", "-n", "-q", "bob@example.test", env={"VCLI_CLEAR_PASSWORDS": "1"})
    assert r.out == "bob\n\n7000000S\n"  # the empty clear field: an empty line


def test_vuserinfo_usage_percent_from_maildir(users):
    st = users
    md = st.ddir(D) / "bob" / "Maildir"
    (md / "cur" / "1700000000.1.host,S=3500000:2,S").write_bytes(b"x")
    (md / "cur" / "1700000001.1.host,S=9000000:2,ST").write_bytes(b"x")  # trashed: not counted
    (md / ".Trash" / "cur").mkdir(parents=True)
    (md / ".Trash" / "cur" / "1700000002.1.host,S=9000000").write_bytes(b"x")
    assert st.run("vuserinfo", "-Q", "bob@example.test").out == "50%\n"


def test_vuserinfo_domain_listing(users):
    st = users
    r = st.run("vuserinfo", "-n", "-D", D)
    assert (r.rc, r.err) == (0, "")
    assert r.out == f"{SEPARATOR}\nbob\n{SEPARATOR}\nerin\n{SEPARATOR}\npostmaster\n"
    r = st.run("vuserinfo", "-D", D)
    blocks = r.out.split(SEPARATOR + "\n")
    assert blocks[0] == "" and len(blocks) == 4
    assert blocks[1] == st.run("vuserinfo", "bob@example.test").out.replace(
        "\nclear passwd: \n", "\nclear passwd: (null)\n")
    for b in blocks[1:]:
        assert "\nclear passwd: (null)\n" in b
    assert "clear passwd: (null)" not in st.run("vuserinfo", "erin@example.test").out
    # selectors and -D: separator before each block, nothing after the last
    r = st.run("vuserinfo", "-n", "-q", "-D", D)
    assert r.out == f"{SEPARATOR}\nbob\n7000000S\n{SEPARATOR}\nerin\n10485760S,500C\n{SEPARATOR}\npostmaster\nNOQUOTA\n"


def test_vuserinfo_errors(st):
    st.call_ok("vaddaliasdomain", D, "alias.test")
    st.call_ok("vadduser", "alice@example.test", "Alice-pw1")
    assert st.run("vuserinfo", "-n", "alice@alias.test").out == "alice\n"
    before = st.snapshot()
    assert st.run("vuserinfo", "a@nodomain.test").t == (255, "", "no such user a@nodomain.test\n")
    assert st.run("vuserinfo", "nobody@example.test").t == (255, "", "no such user nobody@example.test\n")
    assert st.run("vuserinfo", "-D", "nodomain.test").t == (245, "", "Error: Domain does not exist\n")
    r = st.run("vuserinfo")
    assert r.rc == 255 and r.out == "" and r.err.startswith("vuserinfo: usage: [options] email_address\n")
    r = st.run("vuserinfo", "-z", "alice@example.test")
    assert r.rc == 255 and r.err.startswith("vuserinfo: invalid option -- 'z'\nvuserinfo: usage:")
    r = st.run("vuserinfo", "-v", "-n", "alice@example.test")
    assert r.t == (0, "version: 5.6.13\nalice\n", "")
    assert st.snapshot() == before


# --- vdominfo -----------------------------------------------------------------------


@pytest.fixture()
def domains(st):
    for u in ("alice", "bob", "carol", "dave"):
        st.call_ok("vadduser", f"{u}@example.test", "pw-1")
    st.call_ok("vadddomain", "admin.test", "Pm-pass1")
    st.call_ok("vadduser", "root1@admin.test", "pw-1")
    st.call_ok("vaddaliasdomain", D, "alias.test")
    return st


def dom_block(st, name, real, users):
    return f"domain: {name}\nuid:    89\ngid:    89\ndir:    {st.ddir(real)}\nusers:  {users}\n"


def test_vdominfo_all(domains):
    st = domains
    before = st.snapshot()
    r = st.run("vdominfo")
    assert (r.rc, r.err) == (0, "")
    assert r.out == (dom_block(st, "admin.test", "admin.test", 2) + "\n"
                     + dom_block(st, "alias.test (alias of example.test)", D, 5) + "\n"
                     + dom_block(st, D, D, 5) + "\n")
    assert st.run("vdominfo", "-n").out == "admin.test\n\nalias.test (alias of example.test)\n\nexample.test\n\n"
    assert st.run("vdominfo", "-a").out == r.out
    assert st.snapshot() == before  # vdominfo only reads


def test_vdominfo_one(domains):
    st = domains
    r = st.run("vdominfo", "alias.test")
    assert (r.rc, r.out, r.err) == (0, dom_block(st, D, D, 5) + "alias: alias.test\n", "")
    assert st.run("vdominfo", "EXAMPLE.test").out == r.out
    assert st.run("vdominfo", "admin.test").out == dom_block(st, "admin.test", "admin.test", 2)
    assert st.run("vdominfo", "-t", D).out == "5\nalias: alias.test\n"
    assert st.run("vdominfo", "-r", "alias.test").out == "example.test\nalias: alias.test\n"
    # selectors print in the fixed order n u g d t r whatever the order given
    assert st.run("vdominfo", "-r", "-t", "-d", "-g", "-u", "-n", "admin.test").out == \
        f"admin.test\n89\n89\n{st.ddir('admin.test')}\n2\nadmin.test\n"
    assert st.run("vdominfo", "nodomain.test").t == (245, "", "Invalid domain name\n")
    r = st.run("vdominfo", "-h")
    assert r.rc == 255 and r.out == ""
    assert r.err.startswith("vdominfo: invalid option -- 'h'\nvdominfo: usage: [options] [domain]\n")


def test_vdominfo_empty_install(base):
    st = CliStore(base)
    assert st.run("vdominfo").t == (0, "What now - Success\n", "")
