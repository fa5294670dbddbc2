"""Golden tests of vadduser, vdeluser, vmoduser, vpasswd and vsetuserquota through the installed
commands: stdout byte for byte, exit status, and the files they leave (spec/tools.md §1-§6,
spec/store.md §3, §6, §7, §9, spec/flags.md)."""

from __future__ import annotations

import os
import stat

import pytest
from cli_helpers import (
    HASH_RE,
    check_domain,
    patched_environ,
    verify,
    vpasswd_cdb,
)

D = "example.test"
RANDOM_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@!#%*")


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- vadduser -----------------------------------------------------------------------


def test_vadduser_golden(st):
    r = st.run("vadduser", "bob@example.test", "Bob-pw1")
    assert (r.rc, r.out, r.err) == (0, "", "")
    d = st.ddir(D)
    lines = st.vpasswd_lines(D)
    assert [ln.split(":")[0] for ln in lines] == ["bob", "postmaster"]
    f = lines[0].split(":")
    assert HASH_RE.fullmatch(f[1]) and verify("Bob-pw1", f[1])
    assert f[2:] == ["1", "0", "bob", f"{d}/bob", "NOQUOTA"]
    assert mode(d / "vpasswd") == 0o600
    assert (d / "bob" / "lastauth").read_bytes() == b"0.0.0.0"
    assert sorted(os.listdir(d / "bob")) == ["Maildir", "lastauth"]
    assert sorted(os.listdir(d / "bob" / "Maildir")) == ["cur", "new", "tmp"]
    assert (d / ".dir-control").read_bytes() == b"2\n0\n3\n0 0 0\n61 61 61\n0 2 2\n0 0 0\n\n"
    check_domain(st, D)


def test_vadduser_options(st):
    d = st.ddir(D)
    st.ok("vadduser", "Frank@Example.Test", "Frank-pw1")  # lower-cased
    st.ok("vadduser", "-q", "5000000", "-c", "Test user", "quota@example.test", "pw-1")
    st.ok("vadduser", "-q", "abc", "empty@example.test", "pw-1")
    st.ok("vadduser", "-q", "NOQUOTA", "noq@example.test", "pw-1")
    st.ok("vadduser", "-q", "5M,1000C", "both@example.test", "pw-1")
    st.ok("vadduser", "-e", "$1$abcdefgh$0123456789abcdefghijkl", "hashed@example.test")
    st.ok("vadduser", "al%example.test", "pw-1")  # '%' and '/' are separators too
    st.ok("vadduser", "sl/example.test", "pw-1")
    r = st.run("vadduser", "-s", "dash.s@example.test", "pw-1")
    assert (r.rc, r.out, r.err) == (0, "", "Warning: The -s option has been disabled.\n")
    assert st.fields(D, "frank")[4:] == ["frank", f"{d}/frank", "NOQUOTA"]
    assert st.fields(D, "quota")[4:] == ["Test user", f"{d}/quota", "5000000S"]
    assert (d / "quota" / "Maildir" / "maildirsize").read_bytes() == b"5000000S\n0 0\n"
    assert st.fields(D, "empty")[6] == ""
    assert st.fields(D, "noq")[6] == "NOQUOTA"
    assert st.fields(D, "both")[6] == "5242880S,1000C"
    assert st.fields(D, "hashed")[1] == "$1$abcdefgh$0123456789abcdefghijkl"
    assert verify("pw-1", st.fields(D, "al")[1]) and verify("pw-1", st.fields(D, "sl")[1])
    check_domain(st, D)


def test_vadduser_random_and_prompt(st):
    r = st.run("vadduser", "-r", "rnd@example.test")
    assert r.rc == 0 and r.err == "" and r.out.startswith("Random password: ") and r.out.count("\n") == 1
    pw = r.out[len("Random password: "):-1]
    assert len(pw) == 12 and set(pw) <= RANDOM_CHARS and verify(pw, st.fields(D, "rnd")[1])
    r = st.run("vadduser", "-r20", "rnd20@example.test")
    assert len(r.out) == len("Random password: \n") + 20
    r = st.run("vadduser", "gina@example.test", input="Gina-pw1\nGina-pw1\n")
    assert (r.rc, r.out) == (0, "")
    assert r.err == "Please enter password for gina@example.test: enter password again: "
    assert verify("Gina-pw1", st.fields(D, "gina")[1])
    before = st.snapshot()
    r = st.run("vadduser", "nopw@example.test")
    assert r.rc == 255 and r.out == ""
    assert r.err == "Please enter password for nopw@example.test: enter password again: Error: No password entered\n"
    r = st.run("vadduser", "-r", "x@example.test", "pw")
    assert (r.rc, r.err) == (255, "Error: don't use -r option when giving password on command line\n")
    r = st.run("vadduser", "-r129", "xy@example.test")
    assert (r.rc, r.err) == (229, "Error: password too long (max=128)\n")
    r = st.run("vadduser")
    assert r.rc == 255 and r.out == "" and r.err.startswith("vadduser: usage: [options] email_address [passwd]\n")
    assert st.snapshot() == before


def test_vadduser_domain_default_quota(st):
    (st.ddir(D) / ".qmailadmin-limits").write_text("default_quota 10485760\ndefault_maxmsgcount 500\n")
    st.ok("vadduser", "erin@example.test", "Erin-pw1")
    assert st.fields(D, "erin")[6] == "10485760S,500C"
    check_domain(st, D)


def test_vadduser_through_alias_domain(st):
    st.call_ok("vaddaliasdomain", D, "alias.test")
    st.ok("vadduser", "alice@alias.test", "Alice-pw1")
    assert st.fields(D, "alice")[5] == f"{st.ddir(D)}/alice"
    assert st.run("vuserinfo", "-n", "alice@alias.test").out == "alice\n"


def test_vadduser_clear_password_build(st):
    env = {"VCLI_CLEAR_PASSWORDS": "1"}
    st.ok("vadduser", "carol@example.test", "Carol-pw1", env=env)
    st.ok("vadduser", "-e", "$1$abcdefgh$0123456789abcdefghijkl", "dave@example.test", env=env)
    c = st.fields(D, "carol")
    assert len(c) == 8 and c[7] == "Carol-pw1" and verify("Carol-pw1", c[1])
    assert st.fields(D, "dave")[7] == ""
    assert st.run("vuserinfo", "-C", "carol@example.test", env=env).out == "Carol-pw1\n"
    out = st.run("vuserinfo", "carol@example.test", env=env).out
    assert "\nclear passwd: Carol-pw1\n" in out
    # a clear password with ':' would add a field to the line: refused
    before = st.snapshot()
    r = st.run("vadduser", "erin@example.test", "a:b", env=env)
    assert (r.rc, r.out, r.err) == (236, "", "Error: bad character\n")
    assert st.snapshot() == before


def test_vadduser_colon_in_password_default_build_is_hashed(st):
    # Without the clear-text field a ':' never reaches vpasswd (only its hash does).
    st.ok("vadduser", "colon@example.test", "a:b:c")
    assert verify("a:b:c", st.fields(D, "colon")[1])
    check_domain(st, D)


# --- vdeluser ---------------------------------------------------------------------


def test_vdeluser(st):
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    st.call_ok("vadduser", "carol@example.test", "Carol-pw1")
    r = st.run("vdeluser", "BOB@example.test")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert [ln.split(":")[0] for ln in st.vpasswd_lines(D)] == ["carol", "postmaster"]
    assert not (st.ddir(D) / "bob").exists()
    assert mode(st.ddir(D) / "vpasswd") == 0o600
    assert not (st.ddir(D) / ".dir_control_free").exists()  # bob lived directly in the domain dir
    check_domain(st, D)
    before = st.snapshot()
    assert st.run("vdeluser", "bob@example.test").t == (246, "", "Error: User does not exist\n")
    assert st.run("vdeluser", "x@nodomain.test").t == (245, "", "Error: Domain does not exist\n")
    r = st.run("vdeluser")
    assert r.rc == 255 and r.err.startswith("vdeluser: usage: [options] email_address\n")
    assert st.snapshot() == before


def test_vdeluser_catchall_protected(st):
    st.call_ok("vadddomain", "-e", "postmaster", "tmp.test", "Pm-pass1")
    before = st.snapshot()
    r = st.run("vdeluser", "postmaster@tmp.test")
    assert (r.rc, r.out, r.err) == (201, "", "Error: can't delete catchall account\n")
    assert st.snapshot() == before
    st.ok("vdeluser", "postmaster@example.test")  # postmaster itself is not protected


def test_hash_dir_slot_freed_and_reused(st):
    from vcli.backend import open_backend
    from vcli.store.store import NewUser

    with patched_environ(st.env):
        store = open_backend()
        store.add_users(D, [NewUser(f"u{i:03d}", hashed="$1$abcdefgh$0123456789abcdefghijkl") for i in range(99)])
    d = st.ddir(D)
    # postmaster is entry 1, u000..u097 entries 2..99: flat; u098 is the 100th, in 0/
    assert st.fields(D, "u097")[5] == f"{d}/u097" and st.fields(D, "u098")[5] == f"{d}/0/u098"
    assert (d / ".dir-control").read_bytes() == b"100\n0\n3\n0 0 0\n61 61 61\n0 2 2\n0 0 0\n0\n"
    st.ok("vdeluser", "u098@example.test")
    assert (d / ".dir_control_free").read_bytes() == b"0\n"
    assert (d / ".dir-control").read_bytes().split(b"\n")[0] == b"99"
    st.ok("vadduser", "newbie@example.test", "pw-1")
    assert st.fields(D, "newbie")[5] == f"{d}/0/newbie"
    assert (d / ".dir_control_free").read_bytes() == b""
    check_domain(st, D)


# --- vmoduser ---------------------------------------------------------------------

# spec/flags.md §2: vmoduser letter -> bit
FLAG_BITS = {"d": 1, "p": 2, "w": 4, "i": 8, "b": 16, "r": 32, "u": 64, "0": 128, "1": 256, "2": 512,
             "3": 1024, "s": 2048, "a": 4096, "o": 8192, "f": 16384, "F": 32768, "S": 65536, "E": 131072,
             "m": 262144}


def test_vmoduser_every_flag_letter(st):
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    for letter, bit in FLAG_BITS.items():
        r = st.call("vmoduser", "-x", f"-{letter}", "bob@example.test")
        if letter in "SE" and os.getuid() != 0:
            assert r.rc == 0 and "needs root" in r.err
            assert st.fields(D, "bob")[3] == "0"
            continue
        assert (r.rc, r.out, r.err) == (0, "", ""), letter
        assert st.fields(D, "bob")[3] == str(bit), letter
        line = st.vpasswd(D).split(b"\n")[0]
        assert (st.ddir(D) / "vpasswd.cdb").read_bytes() == vpasswd_cdb(st.vpasswd(D)), letter
        assert line.startswith(b"bob:")
    check_domain(st, D)


def test_vmoduser_combinations_and_fields(st):
    d = st.ddir(D)
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    old = st.fields(D, "bob")
    r = st.run("vmoduser", "-p", "-s", "-w", "-d", "bob@example.test")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert st.fields(D, "bob")[3] == "2055"
    assert mode(d / "vpasswd") == 0o644  # vmoduser writes with the caller's umask (022 here)
    st.ok("vmoduser", "-a", "bob@example.test")
    assert st.fields(D, "bob")[3] == str(2055 | 4096)
    st.ok("vmoduser", "-x", "bob@example.test")
    assert st.fields(D, "bob")[3] == "0"
    st.ok("vmoduser", "-x", "-p", "bob@example.test")
    assert st.fields(D, "bob")[3] == "2"
    st.ok("vmoduser", "-q", "7000000", "-c", "Bob Changed", "bob@example.test")
    f = st.fields(D, "bob")
    assert f[4] == "Bob Changed" and f[6] == "7000000S" and f[1] == old[1]
    assert (d / "bob" / "Maildir" / "maildirsize").read_bytes() == b"7000000S\n0 0\n"
    st.ok("vmoduser", "-q", "noquota", "bob@example.test")  # not upper-cased: empty quota
    assert st.fields(D, "bob")[6] == ""
    assert not (d / "bob" / "Maildir" / "maildirsize").exists()
    st.ok("vmoduser", "-C", "newbob", "bob@example.test")
    f = st.fields(D, "bob")
    assert HASH_RE.fullmatch(f[1]) and verify("newbob", f[1]) and f[1] != old[1]
    st.ok("vmoduser", "-e", "$1$abcdefgh$0123456789abcdefghijkl", "bob@example.test")
    assert st.fields(D, "bob")[1] == "$1$abcdefgh$0123456789abcdefghijkl"
    st.ok("vmoduser", "-e", "$1$abcdefgh$0123456789abcdefghijkl", "-C", "cwins", "bob@example.test")
    assert verify("cwins", st.fields(D, "bob")[1])  # -C wins over -e
    check_domain(st, D)
    st.ok("vmoduser", "-D", "/elsewhere/bob", "bob@example.test")
    assert st.fields(D, "bob")[5] == "/elsewhere/bob"


def test_default_build_rewrite_drops_the_clear_field_of_that_line_only(st):
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1", env={"VCLI_CLEAR_PASSWORDS": "1"})
    st.call_ok("vadduser", "carol@example.test", "Carol-pw1", env={"VCLI_CLEAR_PASSWORDS": "1"})
    carol = st.vpasswd_lines(D)[1]
    assert carol.endswith(":NOQUOTA:Carol-pw1")
    st.ok("vmoduser", "-p", "bob@example.test")  # default build: 7 fields written (spec/store.md §3.2)
    assert len(st.fields(D, "bob")) == 7 and st.vpasswd_lines(D)[1] == carol


def test_vmoduser_n_leaves_cdb_stale_until_the_next_lookup(st):
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    cdb = st.ddir(D) / "vpasswd.cdb"
    before = cdb.read_bytes()
    r = st.run("vmoduser", "-n", "-p", "bob@example.test")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert st.fields(D, "bob")[3] == "2"
    assert cdb.read_bytes() == before  # stale, as vpopmail leaves it
    # vcli rebuilds a stale cdb before a lookup, with a warning (README "Deliberate differences")
    r = st.run("vuserinfo", "-g", "bob@example.test")
    assert (r.rc, r.out) == (0, "2\n")
    assert r.err == f"Warning: {st.ddir(D)}/vpasswd.cdb older than vpasswd; rebuilt from vpasswd\n"
    assert cdb.read_bytes() == vpasswd_cdb(st.vpasswd(D))


def test_vmoduser_domain_mode(st):
    for u in ("carol", "bob", "alice"):
        st.call_ok("vadduser", f"{u}@example.test", "pw-1")
    r = st.run("vmoduser", "-p", "-q", "1M", "example.test")
    assert (r.rc, r.out, r.err) == (0, "", "")
    for f in check_domain(st, D):
        assert f[3] == "2" and f[6] == "1048576S"
    r = st.run("vmoduser", "-a", "nobody@example.test")
    assert (r.rc, r.out, r.err) == (255, "", "no such user nobody@example.test\n")
    r = st.run("vmoduser", "-p", "nodomain.test")
    assert (r.rc, r.out, r.err) == (245, "", "Error: Domain does not exist\n")


def test_vmoduser_usage(st):
    r = st.run("vmoduser", "-h")
    assert r.rc == 0 and r.err == ""
    assert r.out.startswith("vmoduser: usage: [options] email_addr or domain (for each user in domain)\n")
    for letter in FLAG_BITS:
        assert f"         -{letter} (" in r.out, letter
    r = st.run("vmoduser")
    assert r.rc == 255 and r.out == "" and r.err.startswith("vmoduser: usage: [options] email_addr")


# --- vpasswd ----------------------------------------------------------------------


def test_vpasswd(st):
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    old = st.fields(D, "bob")
    r = st.run("vpasswd", "bob@example.test", "new pw with spaces")
    assert (r.rc, r.out, r.err) == (0, "", "")
    new = st.fields(D, "bob")
    assert verify("new pw with spaces", new[1]) and new[:1] + new[2:] == old[:1] + old[2:]
    assert mode(st.ddir(D) / "vpasswd") == 0o644
    r = st.run("vpasswd", "-r8", "bob@example.test")
    assert r.rc == 0 and r.out.startswith("Random password: ") and len(r.out) == len("Random password: \n") + 8
    assert verify(r.out[17:-1], st.fields(D, "bob")[1])
    r = st.run("vpasswd", "bob@example.test", input="Pw-from-stdin\nPw-from-stdin\n")
    assert r.rc == 0 and verify("Pw-from-stdin", st.fields(D, "bob")[1])
    assert r.err == "Please enter password for bob@example.test: enter password again: "
    check_domain(st, D)
    st.ok("vpasswd", "bob@example.test", "Clear-pw2", env={"VCLI_CLEAR_PASSWORDS": "1"})
    f = st.fields(D, "bob")
    assert f[7] == "Clear-pw2" and verify("Clear-pw2", f[1])

    before = st.snapshot()
    assert st.run("vpasswd", "nobody@example.test", "xyz").t == (255, "", "Error: Illegal username\n")
    r = st.run("vpasswd", "bob@example.test", "")  # an empty password is none: asked for, none read
    assert (r.rc, r.out) == (255, "")
    assert r.err == "Please enter password for bob@example.test: enter password again: Error: No password entered\n"
    r = st.run("vpasswd")
    assert r.rc == 255 and r.err.startswith("vpasswd: usage: [options] email_address [password]\n")
    assert st.snapshot() == before


def test_vpasswd_refused_under_no_passwd_chng(st):
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    st.call_ok("vadduser", "erin@example.test", "Erin-pw1")
    st.call_ok("vmoduser", "-d", "bob@example.test")
    before = st.snapshot()
    assert st.run("vpasswd", "bob@example.test", "x-1").t == (255, "", "Error: Illegal username\n")
    assert st.snapshot() == before
    (st.ddir(D) / ".qmailadmin-limits").write_text("disable_password_changing\n")
    before = st.snapshot()
    assert st.run("vpasswd", "erin@example.test", "x-1").t == (255, "", "Error: Illegal username\n")
    assert st.snapshot() == before


# --- vsetuserquota ----------------------------------------------------------------


@pytest.mark.parametrize(("given", "stored"), [
    ("50M", "52428800S"), ("5M,1000C", "5242880S,1000C"), ("2000000S,100C", "2000000S,100C"),
    ("noquota", "NOQUOTA"), ("NOQUOTA", "NOQUOTA"), ("abc", ""), ("0", ""), ("1000c", "1000C"), ("1kb", "1024S"),
])
def test_vsetuserquota_values(st, given, stored):
    st.call_ok("vadduser", "-q", "1M", "bob@example.test", "Bob-pw1")
    r = st.call("vsetuserquota", "bob@example.test", given)
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert st.fields(D, "bob")[6] == stored
    check_domain(st, D)


def test_vsetuserquota(st):
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    r = st.run("vsetuserquota", "bob@example.test", "50M")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert st.fields(D, "bob")[6] == "52428800S"
    assert mode(st.ddir(D) / "vpasswd") == 0o644
    assert (st.ddir(D) / "bob" / "Maildir" / "maildirsize").read_bytes() == b"52428800S\n0 0\n"
    r = st.run("vsetuserquota", "example.test", "2000000")
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert [f[6] for f in check_domain(st, D)] == ["2000000S", "2000000S"]
    assert st.run("vuserinfo", "-q", "bob@example.test").out == "2000000S\n"
    st.ok("vsetuserquota", "bob@example.test", "abc")
    assert st.run("vuserinfo", "-q", "bob@example.test").out == "\n"
    assert st.run("vuserinfo", "-Q", "bob@example.test").out == "0%\n"

    before = st.snapshot()
    r = st.run("vsetuserquota", "nobody@example.test", "100")
    assert (r.rc, r.out, r.err) == (246, "", "Error: User does not exist\n")
    r = st.run("vsetuserquota", "x@nodomain.test", "100")
    assert (r.rc, r.out, r.err) == (245, "", "Error: Domain does not exist\n")
    r = st.run("vsetuserquota", "nodomain.test", "100")
    assert (r.rc, r.out, r.err) == (245, "", "Error: Domain does not exist\n")
    r = st.run("vsetuserquota", "bob@example.test")
    assert r.rc == 255 and r.err.startswith("vsetuserquota: [options] email_address|domain_name quota\n")
    assert st.snapshot() == before
