"""Bad input: one clear error line on stderr, a documented non-zero exit status (README "Exit codes"),
nothing on stdout, and every file of the store byte-for-byte and mode-for-mode unchanged."""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest
from cli_helpers import CliStore, diff_snapshots, tool, vpasswd_cdb

D = "example.test"
U64 = "u" * 64
ILLEGAL = "Error: Illegal username"


@pytest.fixture()
def st(base):
    s = CliStore(base)
    s.call_ok("vadddomain", D, "Pm-pass1")
    s.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    return s


def P(id_, argv, rc, err, env=None, inproc=False):
    return pytest.param(argv, rc, err, env or {}, inproc, id=id_)


CASES = [
    # user names
    P("user-colon", ["vadduser", "a:b@example.test", "pw-1"], 255, ILLEGAL),
    P("user-newline", ["vadduser", "a\nb@example.test", "pw-1"], 255, ILLEGAL),
    P("user-cr", ["vadduser", "a\rb@example.test", "pw-1"], 255, ILLEGAL),
    P("user-nul", ["vadduser", "a\0b@example.test", "pw-1"], 255, ILLEGAL, inproc=True),
    P("user-dotdot", ["vadduser", "..@example.test", "pw-1"], 255, ILLEGAL),
    P("user-inner-dotdot", ["vadduser", "a..b@example.test", "pw-1"], 255, ILLEGAL),
    P("user-traversal", ["vadduser", "../x@example.test", "pw-1"], 255, ILLEGAL),
    P("user-slash", ["vadduser", "a/b@example.test", "pw-1"], 255, ILLEGAL),
    P("user-leading-dash", ["vadduser", "--", "-ab@example.test", "pw-1"], 255, ILLEGAL),
    P("user-leading-dot", ["vadduser", ".ab@example.test", "pw-1"], 255, ILLEGAL),
    P("user-space", ["vadduser", "a b@example.test", "pw-1"], 255, ILLEGAL),
    P("user-non-ascii", ["vadduser", "jürgen@example.test", "pw-1"], 255, ILLEGAL),
    P("user-one-char", ["vadduser", "a@example.test", "pw-1"], 255, ILLEGAL),
    P("user-vpasswd", ["vadduser", "vpasswd@example.test", "pw-1"], 255, ILLEGAL),
    P("user-too-long", ["vadduser", U64 + "u@example.test", "pw-1"], 231, "Error: user name too long (max=64)"),
    P("vdeluser-traversal", ["vdeluser", "../bob@example.test"], 255, ILLEGAL),
    P("vmoduser-traversal", ["vmoduser", "-p", "../bob@example.test"], 255, ILLEGAL),
    P("vpasswd-traversal", ["vpasswd", "../bob@example.test", "pw-1"], 255, ILLEGAL),
    P("vsetuserquota-traversal", ["vsetuserquota", "../bob@example.test", "1M"], 255, ILLEGAL),
    P("vuserinfo-traversal", ["vuserinfo", "../bob@example.test"], 255, ILLEGAL),
    P("valias-traversal", ["valias", "-i", "x@y.test", "../x@example.test"], 255, ILLEGAL),
    P("valias-leading-dot", ["valias", "-i", "x@y.test", ".x@example.test"], 255, ILLEGAL),
    P("valias-leading-dash", ["valias", "-i", "x@y.test", "--", "-x@example.test"], 255, ILLEGAL),
    # domain names
    P("domain-space", ["vadduser", "ab@exa mple.test", "pw-1"], 255, ILLEGAL),
    P("domain-non-ascii", ["vadduser", "ab@exämple.test", "pw-1"], 255, ILLEGAL),
    P("domain-traversal", ["vadduser", "ab@../x", "pw-1"], 255, ILLEGAL),
    P("domain-dotdot", ["vadduser", "ab@a..b.test", "pw-1"], 255, ILLEGAL),
    P("domain-leading-dash", ["vadduser", "ab@-x.test", "pw-1"], 255, ILLEGAL),
    P("domain-too-long", ["vadduser", "ab@" + "d" * 92 + ".test", "pw-1"], 230, "Error: domain name too long (max=96)"),
    P("vadddomain-traversal", ["vadddomain", "../x.test", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-slash", ["vadddomain", "a/b.test", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-dotdot", ["vadddomain", "a..b.test", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-leading-dash", ["vadddomain", "--", "-x.test", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-leading-dot", ["vadddomain", ".x.test", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-space", ["vadddomain", "exa mple.test", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-non-ascii", ["vadddomain", "exämple.test", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-colon", ["vadddomain", "a:b.test", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-newline", ["vadddomain", "a\nb.test", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-nul", ["vadddomain", "a\0b.test", "pw-1"], 244, "Error: Invalid domain name", inproc=True),
    P("vadddomain-short", ["vadddomain", "a.", "pw-1"], 244, "Error: Invalid domain name"),
    P("vadddomain-too-long", ["vadddomain", "d" * 92 + ".test", "pw-1"], 230, "Error: domain name too long (max=96)"),
    P("vaddaliasdomain-traversal", ["vaddaliasdomain", D, "../x.test"], 244, "Error: Invalid domain name"),
    P("vaddaliasdomain-space", ["vaddaliasdomain", D, "a b.test"], 244, "Error: Invalid domain name"),
    # comments (gecos)
    P("gecos-colon", ["vadduser", "-c", "John:Smith", "ab@example.test", "pw-1"], 236, "Error: bad character"),
    P("gecos-newline", ["vadduser", "-c", "a\nb", "ab@example.test", "pw-1"], 236, "Error: bad character"),
    P("gecos-cr", ["vadduser", "-c", "a\rb", "ab@example.test", "pw-1"], 236, "Error: bad character"),
    P("gecos-nul", ["vadduser", "-c", "a\0b", "ab@example.test", "pw-1"], 236, "Error: bad character", inproc=True),
    P("gecos-too-long", ["vadduser", "-c", "g" * 65, "ab@example.test", "pw-1"], 228, "Error: gecos too long (max=64)"),
    P("vmoduser-gecos-colon", ["vmoduser", "-c", "John:Smith", "bob@example.test"], 236, "Error: bad character"),
    P("vmoduser-gecos-newline", ["vmoduser", "-c", "a\nb", "bob@example.test"], 236, "Error: bad character"),
    P("vmoduser-gecos-nul", ["vmoduser", "-c", "a\0b", "bob@example.test"], 236, "Error: bad character",
      inproc=True),
    P("vmoduser-gecos-too-long", ["vmoduser", "-c", "g" * 65, "bob@example.test"], 228,
      "Error: gecos too long (max=64)"),
    P("vmoduser-domain-gecos-colon", ["vmoduser", "-c", "a:b", D], 236, "Error: bad character"),
    # passwords
    P("password-newline", ["vadduser", "ab@example.test", "pw\n1"], 236, "Error: bad character"),
    P("password-cr", ["vadduser", "ab@example.test", "pw\r1"], 236, "Error: bad character"),
    P("password-nul", ["vadduser", "ab@example.test", "pw\0001"], 236, "Error: bad character", inproc=True),
    P("password-too-long", ["vadduser", "ab@example.test", "p" * 129], 229, "Error: password too long (max=128)"),
    P("password-colon-clear-build", ["vadduser", "ab@example.test", "a:b"], 236, "Error: bad character",
      env={"VCLI_CLEAR_PASSWORDS": "1"}),
    P("vpasswd-newline", ["vpasswd", "bob@example.test", "a\nb"], 236, "Error: bad character"),
    P("vpasswd-cr", ["vpasswd", "bob@example.test", "a\rb"], 236, "Error: bad character"),
    P("vpasswd-nul", ["vpasswd", "bob@example.test", "a\0b"], 236, "Error: bad character", inproc=True),
    P("vpasswd-too-long", ["vpasswd", "bob@example.test", "p" * 129], 229, "Error: password too long (max=128)"),
    P("vpasswd-colon-clear-build", ["vpasswd", "bob@example.test", "a:b"], 236, "Error: bad character",
      env={"VCLI_CLEAR_PASSWORDS": "1"}),
    P("vmoduser-clear-newline", ["vmoduser", "-C", "a\nb", "bob@example.test"], 236, "Error: bad character"),
    P("vmoduser-clear-too-long", ["vmoduser", "-C", "p" * 129, "bob@example.test"], 229,
      "Error: password too long (max=128)"),
    P("vmoduser-clear-colon-clear-build", ["vmoduser", "-C", "a:b", "bob@example.test"], 236,
      "Error: bad character", env={"VCLI_CLEAR_PASSWORDS": "1"}),
    P("vmoduser-hash-colon", ["vmoduser", "-e", "$1$ab:cd", "bob@example.test"], 236, "Error: bad character"),
    P("vmoduser-hash-newline", ["vmoduser", "-e", "$1$ab\ncd", "bob@example.test"], 236, "Error: bad character"),
    P("vmoduser-hash-too-long", ["vmoduser", "-e", "h" * 129, "bob@example.test"], 229,
      "Error: password too long (max=128)"),
    P("vadduser-hash-colon", ["vadduser", "-e", "$1$ab:cd", "ab@example.test"], 236, "Error: bad character"),
    P("empty-password", ["vadduser", "ab@example.test", ""], 255,  # empty = none: asked for, none read
      "Please enter password for ab@example.test: enter password again: Error: No password entered"),
    # quotas, dirs, alias lines
    P("quota-too-long", ["vadduser", "-q", "1" * 20, "ab@example.test", "pw-1"], 227, "Error: quota too long (max=20)"),
    P("vsetuserquota-too-long", ["vsetuserquota", "bob@example.test", "1" * 20], 227,
      "Error: quota too long (max=20)"),
    P("vsetuserquota-domain-too-long", ["vsetuserquota", D, "1" * 20], 227, "Error: quota too long (max=20)"),
    P("vmoduser-quota-too-long", ["vmoduser", "-q", "1" * 20, "bob@example.test"], 227,
      "Error: quota too long (max=20)"),
    P("vadddomain-quota-too-long", ["vadddomain", "-q", "1" * 20, "new.test", "pw-1"], 227,
      "Error: quota too long (max=20)"),
    P("vadddomain-catchall-quote", ["vadddomain", "-e", "a'b", "new.test", "pw-1"], 236, "Error: bad character"),
    P("vadddomain-empty-password", ["vadddomain", "new.test", ""], 255,
      "Please enter password for postmaster: enter password again: Error: No password entered"),
    P("vmoduser-dir-colon", ["vmoduser", "-D", "/x:y", "bob@example.test"], 236, "Error: bad character"),
    P("vmoduser-dir-too-long", ["vmoduser", "-D", "/" + "d" * 160, "bob@example.test"], 226,
      "Error: dir too long (max=160)"),
    P("alias-line-too-long", ["valias", "-i", "x" * 160, "info@example.test"], 224,
      "Error: alias line too long (max=160)"),
    P("alias-line-newline", ["valias", "-i", "a\nb", "info@example.test"], 236, "Error: bad character"),
    P("alias-line-empty", ["valias", "-i", "", "info@example.test"], 236, "Error: bad character"),
    # unknown domain
    P("vadduser-unknown-domain", ["vadduser", "ab@nodomain.test", "pw-1"], 255, "Error: Domain does not exist"),
    P("vdeluser-unknown-domain", ["vdeluser", "ab@nodomain.test"], 245, "Error: Domain does not exist"),
    P("vmoduser-unknown-domain", ["vmoduser", "-p", "ab@nodomain.test"], 255, "no such user ab@nodomain.test"),
    P("vmoduser-domain-unknown", ["vmoduser", "-p", "nodomain.test"], 245, "Error: Domain does not exist"),
    P("vpasswd-unknown-domain", ["vpasswd", "ab@nodomain.test", "pw-1"], 255, ILLEGAL),
    P("vsetuserquota-unknown-domain", ["vsetuserquota", "ab@nodomain.test", "1M"], 245,
      "Error: Domain does not exist"),
    P("vuserinfo-D-unknown-domain", ["vuserinfo", "-D", "nodomain.test"], 245, "Error: Domain does not exist"),
    P("vdominfo-unknown-domain", ["vdominfo", "nodomain.test"], 245, "Invalid domain name"),
    P("valias-unknown-domain", ["valias", "-i", "x@y.test", "a@nodomain.test"], 245,
      "invalid domain, not in qmail assign file"),
    P("vdeldomain-unknown-domain", ["vdeldomain", "nodomain.test"], 245, "Error: Domain does not exist"),
    P("vaddaliasdomain-neither", ["vaddaliasdomain", "nodomain.test", "other.test"], 255,
      "Error: Neither 'nodomain.test' or 'other.test'  exist, unable to create alias."),
    # existing / missing accounts
    P("vadduser-existing", ["vadduser", "bob@example.test", "pw-1"], 255, "Error: User already exists"),
    P("vadduser-existing-upper", ["vadduser", "BOB@Example.Test", "pw-1"], 255, "Error: User already exists"),
    P("vadddomain-existing", ["vadddomain", "EXAMPLE.test", "pw-1"], 243, "Error: Domain already exists"),
    P("vaddaliasdomain-both", ["vaddaliasdomain", D, D.upper()], 255,
      "Error: real domain and alias domain are the same!"),
    P("vdeluser-missing", ["vdeluser", "nobody@example.test"], 246, "Error: User does not exist"),
    P("vmoduser-missing", ["vmoduser", "-p", "nobody@example.test"], 255, "no such user nobody@example.test"),
    P("vsetuserquota-missing", ["vsetuserquota", "nobody@example.test", "1M"], 246, "Error: User does not exist"),
    P("vpasswd-missing", ["vpasswd", "nobody@example.test", "pw-1"], 255, ILLEGAL),
    P("vuserinfo-missing", ["vuserinfo", "nobody@example.test"], 255, "no such user nobody@example.test"),
    P("vdeluser-no-domain-part", ["vdeluser", "bob"], 255, "You did not use a full email address for the user name"),
    P("valias-delete-missing", ["valias", "-d", "nothere@example.test"], 255,
      "Error: No aliases nothere@example.test found"),
    # command lines
    P("vadduser-r-and-password", ["vadduser", "-r", "ab@example.test", "pw-1"], 255,
      "Error: don't use -r option when giving password on command line"),
    P("vpasswd-r-and-password", ["vpasswd", "-r", "bob@example.test", "pw-1"], 255,
      "Error: don't use -r option when giving password on command line"),
    P("vadduser-random-not-a-number", ["vadduser", "-rabc", "ab@example.test"], 255,
      "Error: bad random password length: abc"),
    P("vadddomain-uid-not-a-number", ["vadddomain", "-i", "abc", "new.test", "pw-1"], 255,
      "Error: uid and gid must be numbers"),
    P("vadddomain-unknown-system-user", ["vadddomain", "-u", "no-such-user-x", "new.test", "pw-1"], 255,
      "Error: user no-such-user-x not found in /etc/passwd"),
    P("vcli-uid-not-a-number", ["vcli", "vadddomain", "-i", "abc", "new.test", "pw-1"], 64,
      "Error: uid and gid must be numbers"),
    P("vadduser-random-too-long", ["vadduser", "-r129", "ab@example.test"], 229, "Error: password too long (max=128)"),
    P("vcli-unknown-option", ["vcli", "vadduser", "--bogus", "ab@example.test", "pw-1"], 64, None),
    P("vcli-missing-argument", ["vcli", "vdeluser"], 64, None),
    P("vcli-r-and-password", ["vcli", "vadduser", "-r", "ab@example.test", "pw-1"], 64,
      "Error: don't use -r option when giving password on command line"),
    P("vcli-unset-unknown-flag", ["vcli", "vmoduser", "--unset", "bogus", "bob@example.test"], 64, None),
]


@pytest.mark.parametrize(("argv", "rc", "err", "env", "inproc"), CASES)
def test_bad_input_changes_nothing(st, argv, rc, err, env, inproc):
    before = st.snapshot()
    r = st.call(argv[0], *argv[1:], env=env) if inproc else st.run(argv[0], *argv[1:], env=env)
    assert r.rc == rc, r
    assert r.out == ""
    if err is None:  # click's own usage error: several lines, ending in the error
        assert r.err.rstrip("\n").splitlines()[-1].startswith("Error: ")
    elif rc in (186,):  # the policy lines follow a strength error (spec/tools.md §1 step 8)
        assert r.err.splitlines()[0] == err
    else:
        assert r.err == err + "\n"
    assert diff_snapshots(before, st.snapshot()) == []
    assert st.snapshot() == before


def test_user_directory_already_exists(st):
    (st.ddir(D) / "ghost").mkdir(mode=0o700)
    before = st.snapshot()
    r = st.run("vadduser", "ghost@example.test", "pw-1")
    assert r.t == (249, "", "Error: User's directory already exists\n")
    assert st.snapshot() == before


def test_missing_vlimits_default_refused_before_anything(st):
    (st.vp / "etc" / "vlimits.default").unlink()
    before = st.snapshot()
    assert st.run("vadduser", "ab@example.test", "pw-1").t == (220, "", "Error: can't read domain limits\n")
    assert st.run("vadddomain", "new.test", "pw-1").t == (220, "", "Error: can't read domain limits\n")
    assert st.snapshot() == before


# --- a missing store --------------------------------------------------------------


MISSING_STORE_COMMANDS = [
    ["vadduser", "x1@example.test", "pw-1"], ["vdeluser", "bob@example.test"], ["vmoduser", "-p", "bob@example.test"],
    ["vmoduser", "-p", D], ["vpasswd", "bob@example.test", "pw-1"], ["vsetuserquota", "bob@example.test", "1M"],
    ["vuserinfo", "bob@example.test"], ["vuserinfo", "-D", D], ["vadddomain", "new.test", "pw-1"],
    ["vdeldomain", D], ["vdominfo"], ["valias", "-i", "x@y.test", "info@example.test"], ["valias", D],
    ["vaddaliasdomain", D, "alias.test"], ["vcli", "vdeluser", "bob@example.test"],
]


@pytest.mark.parametrize("argv", MISSING_STORE_COMMANDS, ids=" ".join)
def test_missing_store_directory(st, argv):
    missing = st.base / "no-such-vpopmail"
    before = st.snapshot()
    r = st.run(*argv, env={"VPOPMAIL_DIR": str(missing)})
    assert r.t == (253, "", f"Error: Unable to chdir to vpopmail directory: {missing}\n")
    assert st.snapshot() == before


def test_missing_base_dir_of_a_new_domain(st):
    missing = st.base / "typo"
    before = st.snapshot()
    r = st.run("vadddomain", "-d", str(missing), "new.test", "pw-1")
    assert r.t == (253, "", f"Error: Unable to chdir to vpopmail directory: {missing}\n")
    assert st.snapshot() == before


# --- a store that cannot be written ----------------------------------------------

WRITERS = [
    ["vadduser", "x1@example.test", "pw-1"], ["vdeluser", "bob@example.test"], ["vmoduser", "-p", "bob@example.test"],
    ["vpasswd", "bob@example.test", "pw-1"], ["vsetuserquota", "bob@example.test", "1M"],
    ["vadddomain", "new.test", "pw-1"], ["vdeldomain", D], ["valias", "-i", "x@y.test", "info@example.test"],
    ["vaddaliasdomain", D, "alias.test"],
]


def _can_unshare(path) -> bool:
    """Root with mount namespaces (util-linux unshare makes its mounts private: nothing leaks out)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    p = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0"', str(path)], capture_output=True)
    return p.returncode == 0


def test_read_only_file_system(st):
    """EROFS: each writer run in a private mount namespace where the store is a read-only bind mount."""
    if not _can_unshare(st.base):
        pytest.skip("needs root and mount namespaces (unshare -m)")
    before = st.snapshot()
    for argv in WRITERS:
        script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
        p = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(st.base), tool(argv[0]), *argv[1:]],
                           env=st.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        assert p.returncode == 74, (argv, p.stderr)
        assert p.stdout == ""
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Read-only file system" in lines[0], argv
    assert st.snapshot() == before


def _drop_dac_capabilities():
    """preexec_fn: take root's power to ignore file permissions out of the bounding set before exec,
    so the command runs as uid 0 bound by the modes like any owner (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH, CAP_FOWNER)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unwritable_store(st):
    """EACCES: every directory of the store without write permission (as root, the command runs
    without the capabilities that let root ignore permissions)."""
    as_root = os.geteuid() == 0
    if as_root:
        try:
            subprocess.run(["true"], preexec_fn=_drop_dac_capabilities, check=True)
        except (subprocess.SubprocessError, OSError):
            pytest.skip("cannot drop capabilities here")
    for dirpath, _dirnames, _filenames in os.walk(st.base):
        os.chmod(dirpath, 0o555)
    try:
        before = st.snapshot()
        for argv in WRITERS:
            p = subprocess.run([tool(argv[0]), *argv[1:]], env=st.env, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, preexec_fn=_drop_dac_capabilities if as_root else None,
                               timeout=60)
            assert p.returncode == 74, (argv, p.stderr)
            assert p.stdout == ""
            lines = p.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: ") and "Permission denied" in lines[0], argv
        assert st.snapshot() == before
    finally:
        for dirpath, _dirnames, _filenames in os.walk(st.base):
            os.chmod(dirpath, 0o755)


# --- corrupt and malformed store files ---------------------------------------------


def _corruptions(good: bytes) -> dict[str, bytes]:
    rng = random.Random(5)
    return {
        "empty": b"",
        "short-header": good[:100],
        "truncated-records": good[:2100],
        "truncated-tables": good[:-8],
        "trailing-garbage": good + b"\0" * 16,
        "zeroed-header": b"\0" * 2048 + good[2048:],
        "random-bytes": bytes(rng.randrange(256) for _ in range(len(good))),
    }


@pytest.mark.parametrize("kind", list(_corruptions(b"x" * 3000)))
def test_corrupt_vpasswd_cdb_is_rebuilt(st, kind):
    d = st.ddir(D)
    cdb = d / "vpasswd.cdb"
    good = cdb.read_bytes()
    assert good == vpasswd_cdb(st.vpasswd(D))
    cdb.write_bytes(_corruptions(good)[kind])
    os.utime(cdb, ns=(os.stat(d / "vpasswd").st_mtime_ns + 10**9,) * 2)  # not stale: corrupt
    r = st.run("vuserinfo", "-n", "bob@example.test")
    assert r.t == (0, "bob\n", f"Warning: {cdb} corrupt; rebuilt from vpasswd\n")
    assert cdb.read_bytes() == good
    assert os.stat(cdb).st_mode & 0o777 == 0o600


def test_missing_vpasswd_cdb_is_rebuilt(st):
    cdb = st.ddir(D) / "vpasswd.cdb"
    good = cdb.read_bytes()
    cdb.unlink()
    r = st.run("vuserinfo", "-n", "bob@example.test")
    assert r.t == (0, "bob\n", f"Warning: {cdb} missing; rebuilt from vpasswd\n")
    assert cdb.read_bytes() == good


def test_no_index_is_built_from_a_malformed_vpasswd(st):
    vp = st.ddir(D) / "vpasswd"
    vp.write_bytes(vp.read_bytes() + b"broken\n")
    (st.ddir(D) / "vpasswd.cdb").unlink()
    before = st.snapshot()
    r = st.run("vuserinfo", "-n", "bob@example.test")
    assert r.t == (65, "", f"Error: {vp} line 3 is malformed (fewer than 6 colons or no newline)\n")
    assert st.snapshot() == before


def test_corrupt_cdb_before_a_write(st):
    cdb = st.ddir(D) / "vpasswd.cdb"
    cdb.write_bytes(cdb.read_bytes()[:2100])
    r = st.run("vadduser", "carol@example.test", "Carol-pw1")
    assert r.t == (0, "", f"Warning: {cdb} corrupt; rebuilt from vpasswd\n")
    assert cdb.read_bytes() == vpasswd_cdb(st.vpasswd(D))
    assert st.run("vadduser", "bob@example.test", "pw-1").t == (255, "", "Error: User already exists\n")


MALFORMED_WRITERS = [
    ["vadduser", "x1@example.test", "pw-1"], ["vdeluser", "bob@example.test"], ["vmoduser", "-p", "bob@example.test"],
    ["vmoduser", "-p", D], ["vpasswd", "bob@example.test", "pw-1"], ["vsetuserquota", "bob@example.test", "1M"],
    ["vsetuserquota", D, "1M"], ["vcli", "vadduser", "x1@example.test", "pw-1"],
]


@pytest.mark.parametrize("stale", [True, False], ids=["cdb-stale", "cdb-fresh"])
def test_malformed_vpasswd_line_refuses_writes(st, stale):
    d = st.ddir(D)
    vp = d / "vpasswd"
    vp.write_bytes(vp.read_bytes() + b"broken:line:1:0\n")
    if not stale:
        os.utime(d / "vpasswd.cdb", ns=(os.stat(vp).st_mtime_ns + 10**9,) * 2)
    before = st.snapshot()
    problem = f"{vp} line 3 is malformed (fewer than 6 colons or no newline)"
    for argv in MALFORMED_WRITERS:
        r = st.run(*argv)
        assert r.rc == 65 and r.out == "", (argv, r)
        assert r.err_lines[-1] == f"Error: {problem}", argv
        # before the error at most the warnings that the stale index was not rebuilt / the listing stopped
        for w in r.err_lines[:-1]:
            assert w.startswith("Warning: "), (argv, w)
    assert st.snapshot() == before


def test_malformed_vpasswd_line_ends_listings(st):
    st.call_ok("vadduser", "zed@example.test", "Zed-pw1")
    vp = st.ddir(D) / "vpasswd"
    lines = vp.read_bytes().splitlines(keepends=True)
    vp.write_bytes(lines[0] + b"broken\n" + b"".join(lines[1:]))
    os.utime(st.ddir(D) / "vpasswd.cdb", ns=(os.stat(vp).st_mtime_ns + 10**9,) * 2)
    before = st.snapshot()
    r = st.run("vuserinfo", "-n", "-D", D)  # spec/store.md §3.5: the listing ends at the bad line
    assert r.t == (0, f"{'-' * 42}\nbob\n", f"Warning: {vp} line 2 is malformed; listing stops there\n")
    assert st.run("vuserinfo", "-n", "zed@example.test").t == (0, "zed\n", "")  # single lookups: the cdb
    assert st.snapshot() == before


def test_in_process_and_subprocess_agree(st):
    """The in-process runner used above is the same program as the console script."""
    a = st.run("vuserinfo", "-n", "-q", "bob@example.test")
    b = st.call("vuserinfo", "-n", "-q", "bob@example.test")
    assert a.t == b.t
