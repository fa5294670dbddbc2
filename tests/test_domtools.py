"""Issue 12 items 3-5: vmoddomlimits, vdeloldusers and vpopbull, through the installed commands
(subprocesses), against the files spec/store.md §8 and spec/tools.md §13 describe."""

from __future__ import annotations

import json
import mailbox
import os
import time

import pytest
from cli_helpers import GID, UID, CliStore

D = "example.test"
E = "other.test"

# spec/store.md §8: after `vmoddomlimits -P 10 -A 20 -F 5 -R 3 -L 2 -Q 100 -q 10M -M 1000 -m 500 -g dp`
# and `vmoddomlimits -p cd -a m` (mode 0600, 325 bytes)
SPEC_FILE = b"""maxpopaccounts: 10
maxaliases: 20
maxforwards: 5
maxautoresponders: 3
maxmailinglists: 2
quota: 100
maxmsgcount: 1000
default_quota: 10485760
default_maxmsgcount: 500
disable_pop
disable_password_changing
perm_account: 5
perm_alias: 2
perm_forward: 0
perm_autoresponder: 0
perm_maillist: 0
perm_quota: 0
perm_defaultquota: 0
"""

# spec/tools.md §13, the -S output of that domain
SPEC_SHOW = """Domain: example.test
--
Max Pop Accounts: 10
Max Aliases: 20
Max Forwards: 5
Max Autoresponders: 3
Max Mailinglists: 2
GID Flags:
  NO_POP
  NO_PASSWD_CHNG
Flags (for commandline): pd
Flags for non postmaster accounts:
  pop account:            DENY_CREATE  ALLOW_MODIFY DENY_DELETE  
  alias:                  ALLOW_CREATE DENY_MODIFY  ALLOW_DELETE 
  forward:                ALLOW_CREATE ALLOW_MODIFY ALLOW_DELETE 
  autoresponder:          ALLOW_CREATE ALLOW_MODIFY ALLOW_DELETE 
  mailinglist:            ALLOW_CREATE ALLOW_MODIFY ALLOW_DELETE 
  mailinglist users:      ALLOW_CREATE ALLOW_MODIFY ALLOW_DELETE 
  mailinglist moderators: ALLOW_CREATE ALLOW_MODIFY ALLOW_DELETE 
  quota:                  ALLOW_CREATE ALLOW_MODIFY ALLOW_DELETE 
  default quota:          ALLOW_CREATE ALLOW_MODIFY ALLOW_DELETE 
Domain Quota: 100 MB
Default User Quota: 10485760 bytes
Max Domain Messages: 1000
Default Max Messages per User: 500
"""  # noqa: W291 - the perm lines end in a space, as vmoddomlimits prints them


@pytest.fixture()
def st(base):
    s = CliStore(base)
    s.call_ok("vadddomain", D, "Pm-pass1")
    return s


def limits_file(s: CliStore) -> bytes:
    return (s.ddir(D) / ".qmailadmin-limits").read_bytes()


def lines_of(data: bytes) -> dict[str, str]:
    out = {}
    for line in data.decode().splitlines():
        k, _, v = line.partition(": ")
        out[k] = v
    return out


# --- item 3: vmoddomlimits ------------------------------------------------------------------


def test_i12_03_file_bytes_and_show_match_the_spec(st):
    """The spec's two commands leave its 325-byte file (0600, domain owner), and -S prints its layout."""
    st.ok("vmoddomlimits", "-P", "10", "-A", "20", "-F", "5", "-R", "3", "-L", "2", "-Q", "100", "-q", "10M",
          "-M", "1000", "-m", "500", "-g", "dp", D)
    r = st.ok("vmoddomlimits", "-p", "cd", "-a", "m", D)
    assert (r.out, r.err) == ("", "")
    assert limits_file(st) == SPEC_FILE and len(SPEC_FILE) == 325
    info = os.stat(st.ddir(D) / ".qmailadmin-limits")
    assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o600, UID, GID)
    assert st.ok("vmoddomlimits", "-S", D).out == SPEC_SHOW
    # -S shows and ends there: setting options given with it change nothing (as the C tool)
    assert st.ok("vmoddomlimits", "-S", "-P", "99", D).out == SPEC_SHOW
    assert limits_file(st) == SPEC_FILE


def test_i12_03_defaults_fallback_and_default_file(st):
    """No .qmailadmin-limits: -S shows vlimits.default read over vpopmail's -1 defaults (Max Aliases -1);
    -d -S reads the file alone (Max Aliases 0, the spec's quirk); -d edits etc/vlimits.default (0644)."""
    out = st.ok("vmoddomlimits", "-S", D).out.splitlines()
    assert out[:7] == ["Domain: example.test", "--", "Max Pop Accounts: -1", "Max Aliases: -1",
                       "Max Forwards: -1", "Max Autoresponders: -1", "Max Mailinglists: -1"]
    assert out[7:9] == ["GID Flags:", "Flags (for commandline): "]
    assert out[-4:] == ["Domain Quota: 0 MB", "Default User Quota: 0 bytes", "Max Domain Messages: 0",
                        "Default Max Messages per User: 0"]
    assert all("DENY" not in x for x in out)
    default = st.ok("vmoddomlimits", "-d", "-S").out.splitlines()
    assert default[0] == f"Default limits: {st.vp / 'etc' / 'vlimits.default'}"
    assert default[1:] == out[1:3] + ["Max Aliases: 0"] + out[4:]
    assert not (st.ddir(D) / ".qmailadmin-limits").exists()
    st.ok("vmoddomlimits", "-d", "-Q", "50")
    vd = st.vp / "etc" / "vlimits.default"
    assert lines_of(vd.read_bytes())["quota"] == "50" and os.stat(vd).st_mode & 0o777 == 0o644
    assert "Domain Quota: 50 MB" in st.ok("vmoddomlimits", "-S", D).out  # the domain falls back to it
    r = st.run("vmoddomlimits", "-d", "-D")
    assert r.rc == 255 and len(r.err_lines) == 1 and "must not be deleted" in r.err


COUNTS = {"-P": "maxpopaccounts", "-A": "maxaliases", "-F": "maxforwards", "-R": "maxautoresponders",
          "-L": "maxmailinglists", "-Q": "quota", "-M": "maxmsgcount", "-m": "default_maxmsgcount"}
GID_KEYS = {"u": "disable_dialup", "d": "disable_password_changing", "p": "disable_pop", "s": "disable_smtp",
       "w": "disable_webmail", "i": "disable_imap", "r": "disable_external_relay", "c": "disable_spamassassin",
       "x": "delete_spam", "m": "disable_maildrop"}
PERMS = {"-p": "perm_account", "-a": "perm_alias", "-f": "perm_forward", "-r": "perm_autoresponder",
         "-l": "perm_maillist", "-x": "perm_quota", "-z": "perm_defaultquota"}


def test_i12_03_every_option(st):
    """Each setting option writes its own keyword and keeps the others."""
    for i, (opt, key) in enumerate(COUNTS.items(), 1):
        st.ok("vmoddomlimits", opt, str(i * 7), D)
        assert lines_of(limits_file(st))[key] == str(i * 7), opt
    got = lines_of(limits_file(st))
    assert [got[k] for k in COUNTS.values()] == [str(i * 7) for i in range(1, 9)]
    st.ok("vmoddomlimits", "-P", "-1", D)
    assert lines_of(limits_file(st))["maxpopaccounts"] == "-1"
    for q, want in (("10M", "10485760"), ("1024K", "1048576"), ("5000000", "5000000"), ("5M,1000C", "5242880")):
        st.ok("vmoddomlimits", "-q", q, D)
        assert lines_of(limits_file(st))["default_quota"] == want, q
    for letter, key in GID_KEYS.items():
        st.ok("vmoddomlimits", "-g", letter, D)
        flags = [x for x in limits_file(st).decode().splitlines() if ":" not in x]
        assert flags == [key], letter  # -g replaces the whole set
    st.ok("vmoddomlimits", "-g", "", D)
    assert [x for x in limits_file(st).decode().splitlines() if ":" not in x] == []
    for opt, key in PERMS.items():
        for letters, bits in (("c", 1), ("m", 2), ("d", 4), ("cd", 5), ("a", 7)):
            st.ok("vmoddomlimits", opt, letters, D)
            assert lines_of(limits_file(st))[key] == str(bits), (opt, letters)
        st.ok("vmoddomlimits", opt, "", D)
    # -u / -o (mailing-list users, moderators) land in perm_quota, as vpopmail writes them (spec §8)
    st.ok("vmoddomlimits", "-u", "c", "-o", "d", D)
    assert lines_of(limits_file(st))["perm_quota"] == str((1 << 3) | (4 << 6))


def test_i12_03_delete_limits(st):
    st.ok("vmoddomlimits", "-P", "5", D)
    r = st.ok("vmoddomlimits", "-D", D)
    assert r.out == "Limits deleted\n" and not (st.ddir(D) / ".qmailadmin-limits").exists()
    assert st.ok("vmoddomlimits", "-D", D).out == "Limits deleted\n"  # missing is fine, as vdel_limits


@pytest.mark.parametrize("args, code, text", [
    (["-P", "abc", D], 255, "bad number for maxpopaccounts"),
    (["-A", "12x", D], 255, "bad number for maxaliases"),
    (["-P", "-5", D], 255, "bad number for maxpopaccounts"),
    (["-Q", "-1", D], 255, "bad number for quota"),
    (["-M", "lots", D], 255, "bad number for maxmsgcount"),
    (["-q", "abc", D], 255, "bad quota for default_quota"),
    (["-g", "pz", D], 255, "unknown flag letter 'z'"),
    (["-p", "q", D], 255, "unknown flag letter 'q'"),
    (["-P", "1", "-P", "x", D], 255, "bad number"),
    (["-P", "5", "nosuch.test"], 245, "Domain does not exist"),
    (["-S", "nosuch.test"], 245, "Domain does not exist"),
])
def test_i12_03_bad_input_one_line_nothing_written(st, args, code, text):
    st.ok("vmoddomlimits", "-A", "3", D)
    before = st.snapshot()
    r = st.run("vmoddomlimits", *args)
    assert r.rc == code and len(r.err_lines) == 1 and text in r.err and r.out == "", r
    assert st.snapshot() == before


def test_i12_03_usage(st):
    r = st.run("vmoddomlimits")
    assert r.rc == 255 and r.err.startswith("vmoddomlimits: usage: [options] domain \n") and r.out == ""
    r = st.ok("vmoddomlimits", "-h")
    assert r.out.startswith("vmoddomlimits: usage:") and "-z \"flags\"" in r.out


def test_i12_03_vcli_subcommand(st):
    before = st.snapshot()
    r = st.ok("vcli", "vmoddomlimits", D, "--max-aliases", "7", "--flags", "ps", "--dry-run")
    assert "maxaliases: 7" in r.out and st.snapshot() == before
    st.ok("vcli", "vmoddomlimits", D, "--max-aliases", "7", "--flags", "ps", "--perm-alias", "cm",
          "--default-quota", "10M")
    got = lines_of(limits_file(st))
    assert (got["maxaliases"], got["perm_alias"], got["default_quota"]) == ("7", "3", "10485760")
    assert "disable_pop" in got and "disable_smtp" in got
    data = json.loads(st.ok("vcli", "vmoddomlimits", D, "-o", "json").out)
    assert (data["maxaliases"], data["flags"], data["perm_alias"]) == (7, "sp", 3)
    r = st.run("vcli", "vmoddomlimits", D, "--max-aliases", "many")
    assert r.rc == 64 and len(r.err_lines) == 1


# --- item 4: vdeloldusers -------------------------------------------------------------------

DAY = 86400


def set_lastauth(s: CliStore, domain: str, user: str, days_ago: float | None) -> None:
    path = os.path.join(s.fields(domain, user)[5], "lastauth")  # the home, maybe in a hash dir
    if days_ago is None:
        os.unlink(path)
    else:
        t = time.time() - days_ago * DAY
        os.utime(path, (t, t))


@pytest.fixture()
def old(st):
    """old (300 days), fresh (10 days), never (no lastauth), catch (catch-all, 300 days), postmaster
    (300 days) in example.test; stale (400 days) in other.test."""
    for u in ("old", "fresh", "never", "catch"):
        st.call_ok("vadduser", f"{u}@{D}", "Pw-pass12")
    assert st.call_vcli("catchall", D, "--set", "catch").rc == 0
    st.call_ok("vadddomain", E, "Pm-pass1")
    st.call_ok("vadduser", f"stale@{E}", "Pw-pass12")
    for dom, u, age in ((D, "old", 300), (D, "fresh", 10), (D, "never", None), (D, "catch", 300),
                        (D, "postmaster", 300), (E, "stale", 400), (E, "postmaster", 1)):
        set_lastauth(st, dom, u, age)
    return st


def users(s: CliStore, domain: str) -> list[str]:
    return sorted(x.split(":")[0] for x in s.vpasswd_lines(domain))


def test_i12_04_lists_without_deleting(old):
    """Without -D nothing is deleted (the C tool's dry run); -V names who and who was skipped."""
    before = old.snapshot()
    r = old.ok("vdeloldusers", "-d", D, "-a", "100", "-V")
    out = r.out.splitlines()  # in vpasswd order, then the C tool's two closing lines
    assert sorted(out[:-2]) == ["old@example.test", "skipping catch@example.test (catch-all)",
                                "skipping postmaster@example.test"]
    assert out[-2:] == [" ** no users were deleted  **", " ** use -D to delete users **"]
    assert old.snapshot() == before
    r = old.ok("vdeloldusers", "-d", D, "-a", "100")
    assert r.out == " ** no users were deleted  **\n ** use -D to delete users **\n"
    assert old.ok("vdeloldusers", "-d", D, "-a", "1000").out == "no old users found\n"


def test_i12_04_deletes_old_users_only(old):
    r = old.ok("vdeloldusers", "-e", "-a", "100", "-D")
    assert r.out == "" and r.err == ""
    assert users(old, D) == ["catch", "fresh", "never", "postmaster"]
    assert users(old, E) == ["postmaster"]
    assert not (old.ddir(D) / "old").exists() and not (old.ddir(E) / "stale").exists()
    assert old.ok("vdeloldusers", "-e", "-a", "100", "-D").out == "no old users found\n"


def test_i12_04_default_age_is_180_days(old):
    r = old.ok("vdeloldusers", "-e", "-V")
    assert "old@example.test" in r.out.splitlines() and "stale@other.test" in r.out.splitlines()
    set_lastauth(old, D, "old", 170)
    assert "old@example.test" not in old.ok("vdeloldusers", "-e", "-V").out.splitlines()


@pytest.mark.parametrize("args, code, text", [
    (["-d", D, "-a", "abc", "-D"], 255, "bad age"),
    (["-d", D, "-a", "-5", "-D"], 255, "bad age"),
    (["-a", "10", "-D"], 255, "you must supply either the -e or -d [domain] options"),
    (["-d", "nosuch.test", "-D"], 245, "Domain does not exist"),
])
def test_i12_04_bad_input(old, args, code, text):
    before = old.snapshot()
    r = old.run("vdeloldusers", *args)
    assert r.rc == code and len(r.err_lines) == 1 and text in r.err, r
    assert old.snapshot() == before


def test_i12_04_usage_and_version(old):
    r = old.run("vdeloldusers")
    assert r.rc == 255 and r.err.startswith("vdeloldusers: usage: [options]\n")
    r = old.run("vdeloldusers", "-v", "-e", "-D")
    assert (r.rc, r.out) == (255, "version: 5.6.13\n") and users(old, D) == ["catch", "fresh", "never", "old",
                                                                             "postmaster"]


def test_i12_04_vcli_weeks_exclude_dry_run(old, tmp_path):
    ex = tmp_path / "keep"
    ex.write_text("stale@other.test\n")
    before = old.snapshot()
    r = old.ok("vcli", "vdeloldusers", "--all", "--weeks", "20", "--exclude", str(ex), "--delete", "--dry-run")
    assert "old@example.test" in r.out and "stale" not in r.out and old.snapshot() == before
    rows = json.loads(old.ok("vcli", "vdeloldusers", "--all", "--weeks", "20", "-o", "json").out)
    assert [x["address"] for x in rows] == ["old@example.test", "stale@other.test"]
    old.ok("vcli", "vdeloldusers", "--all", "--weeks", "20", "--exclude", str(ex), "--delete")
    assert users(old, D) == ["catch", "fresh", "never", "postmaster"] and "stale" in users(old, E)


# --- item 5: vpopbull -----------------------------------------------------------------------

MSG = b"From: admin@example.test\nSubject: Maintenance tonight\n\nThe servers go down at 22:00.\n"


@pytest.fixture()
def bull(st, tmp_path):
    for u in ("ann", "ben", "cat"):
        st.call_ok("vadduser", f"{u}@{D}", "Pw-pass12")
    st.call_ok("vadddomain", E, "Pm-pass1")
    st.call_ok("vadduser", f"dan@{E}", "Pw-pass12")
    st.call_ok("vaddaliasdomain", D, "alias.test")
    f = st.base / "bulletin"  # beside the store: hard links need the same file system
    f.write_bytes(MSG)
    return st, f


def maildir(s: CliStore, domain: str, user: str) -> mailbox.Maildir:
    return mailbox.Maildir(str(s.ddir(domain) / user / "Maildir"), factory=None, create=False)


def test_i12_05_copies_read_back_as_messages(bull):
    st, f = bull
    r = st.ok("vpopbull", "-V", "-f", str(f), D)
    assert sorted(r.out.splitlines()) == [f"{u}@{D}" for u in ("ann", "ben", "cat", "postmaster")]
    for u in ("ann", "ben", "cat", "postmaster"):
        md = maildir(st, D, u)
        msgs = list(md)
        assert len(msgs) == 1, u
        m = msgs[0]
        assert m["To"] == f"{u}@{D}" and m["Subject"] == "Maintenance tonight" and m["Date"].endswith("+0000")
        assert m.get_payload() == "The servers go down at 22:00.\n" and m.get_subdir() == "new"
        assert os.listdir(st.ddir(D) / u / "Maildir" / "tmp") == []
        name = os.listdir(st.ddir(D) / u / "Maildir" / "new")[0]
        info = os.stat(st.ddir(D) / u / "Maildir" / "new" / name)
        assert (info.st_mode & 0o777, info.st_uid, info.st_size) == (0o600, UID, int(name.rsplit(",S=", 1)[1]))
    assert list(maildir(st, E, "dan")) == []  # only the domain named


def test_i12_05_keeps_an_existing_date_and_all_domains(bull):
    st, f = bull
    f.write_bytes(b"Date: Mon, 05 Jan 2026 12:00:00 +0000\n" + MSG)
    r = st.ok("vpopbull", "-V", "-f", str(f))
    assert "skipping alias.test (alias of example.test)" in r.err  # each real domain once
    assert len(r.out.splitlines()) == 6
    m = list(maildir(st, E, "dan"))[0]
    assert m.get_all("Date") == ["Mon, 05 Jan 2026 12:00:00 +0000"] and m["To"] == f"dan@{E}"


def test_i12_05_hard_and_symbolic_links(bull):
    st, f = bull
    st.ok("vpopbull", "-h", "-f", str(f), D)
    inode = os.stat(f).st_ino
    for u in ("ann", "ben", "cat", "postmaster"):
        new = st.ddir(D) / u / "Maildir" / "new"
        (name,) = os.listdir(new)
        assert os.stat(new / name).st_ino == inode
        assert list(maildir(st, D, u))[0]["Subject"] == "Maintenance tonight"
    assert os.stat(f).st_nlink == 5
    st.ok("vpopbull", "-s", "-f", str(f), E)
    (name,) = os.listdir(st.ddir(E) / "dan" / "Maildir" / "new")
    assert os.readlink(st.ddir(E) / "dan" / "Maildir" / "new" / name) == str(f)


def test_i12_05_exclude_and_list_only(bull, tmp_path):
    st, f = bull
    ex = tmp_path / "exclude"
    ex.write_text(f"ben@{D}\ndan@{E}\n")
    before = st.snapshot()
    r = st.ok("vpopbull", "-n", "-e", str(ex), D, E)
    assert sorted(r.out.splitlines()) == [f"ann@{D}", f"cat@{D}", f"postmaster@{D}", f"postmaster@{E}"]
    assert st.snapshot() == before
    st.ok("vpopbull", "-e", str(ex), "-f", str(f), D, E)
    assert list(maildir(st, D, "ben")) == [] and list(maildir(st, E, "dan")) == []
    assert len(list(maildir(st, D, "ann"))) == 1


def test_i12_05_over_quota_users_are_skipped(bull):
    """A user whose delivery would pass his quota gets nothing; the others' maildirsize is charged."""
    st, f = bull
    st.call_ok("vsetuserquota", f"ann@{D}", "100")  # smaller than the bulletin
    st.call_ok("vsetuserquota", f"ben@{D}", "1000000S,1C")
    st.call_ok("vsetuserquota", f"cat@{D}", "1000000")
    first = st.ok("vpopbull", "-f", str(f), D)
    assert first.err == f"ann@{D}: over quota, not delivered\n"
    assert list(maildir(st, D, "ann")) == []
    size = os.stat(next((st.ddir(D) / "cat" / "Maildir" / "new").iterdir())).st_size
    assert (st.ddir(D) / "cat" / "Maildir" / "maildirsize").read_bytes() == f"1000000S\n0 0\n{size} 1\n".encode()
    second = st.ok("vpopbull", "-f", str(f), D)  # ben's count quota (1 message) is now full
    assert sorted(second.err.splitlines()) == [f"ann@{D}: over quota, not delivered",
                                               f"ben@{D}: over quota, not delivered"]
    assert len(list(maildir(st, D, "ben"))) == 1 and len(list(maildir(st, D, "cat"))) == 2


def test_i12_05_missing_maildir_is_created(bull):
    st, f = bull
    import shutil

    shutil.rmtree(st.ddir(D) / "ann" / "Maildir")
    st.ok("vpopbull", "-f", str(f), D)
    assert len(list(maildir(st, D, "ann"))) == 1
    assert os.stat(st.ddir(D) / "ann" / "Maildir" / "new").st_uid == UID


def test_i12_05_bad_input(bull, tmp_path):
    st, f = bull
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    before = st.snapshot()
    for args, code, text in ((["-f", str(tmp_path / "missing"), D], 255, "Could not open file"),
                             (["-f", str(empty), D], 255, "is empty"),
                             (["-f", str(f), D, "nosuch.test"], 245, "domain nosuch.test does not exist"),
                             (["-f", str(f), "-e", str(tmp_path / "nofile"), D], 255, "Could not open file")):
        r = st.run("vpopbull", *args)
        assert r.rc == code and len(r.err_lines) == 1 and text in r.err, (args, r)
    r = st.run("vpopbull", D)
    assert r.rc == 255 and r.err.startswith("Error: email_file not specified\nusage: vpopbull")
    r = st.run("vpopbull", "-q", D)
    assert r.rc == 255 and "invalid option -- 'q'" in r.err
    assert st.snapshot() == before


def test_i12_05_vcli_subcommand(bull):
    st, f = bull
    st.call_ok("vsetuserquota", f"ann@{D}", "100")
    before = st.snapshot()
    rows = json.loads(st.ok("vcli", "vpopbull", D, "--file", str(f), "--dry-run", "-o", "json").out)
    assert {r["address"]: r["status"] for r in rows}[f"ann@{D}"] == "over quota"
    assert sum(r["status"] == "would deliver" for r in rows) == 3 and st.snapshot() == before
    st.ok("vcli", "vpopbull", D, E, "--file", str(f), "--method", "hard")
    assert os.stat(f).st_nlink == 1 + 4 + 2  # ann fits the raw 82 bytes: no headers added
    r = st.run("vcli", "vpopbull", D)
    assert r.rc == 64 and len(r.err_lines) == 1


def test_i12_04_bulk_delete_leaves_what_one_by_one_vdeluser_leaves(base):
    """vdeloldusers -D deletes a domain's old users in one rewrite (Store.del_users); the files it
    leaves (vpasswd, cdb, .dir-control, .dir_control_free, the homes) are those of vdeluser one by one."""
    hashed = "$6$saltsalt$" + "h" * 86
    names = [f"u{i:03d}" for i in range(130)]  # past 100: the later ones live in hash dirs
    old_ones = [n for i, n in enumerate(names) if i % 3 == 0]
    stores = []
    for sub in ("bulk", "one1"):
        s = CliStore(base / sub)
        s.call_ok("vadddomain", D, "Pm-pass1")
        s.call_ok("vmoduser", "-e", hashed, f"postmaster@{D}")  # the same bytes in both stores
        feed = base / f"{sub}.csv"
        feed.write_text("".join(f"{n}@{D},{hashed}\n" for n in names))
        assert s.call_vcli("vadduser", "--from-file", str(feed), "--hashed").rc == 0
        stores.append(s)
    bulk, single = stores
    for n in names:
        set_lastauth(bulk, D, n, 300 if n in old_ones else 1)
    set_lastauth(bulk, D, "postmaster", 1)
    bulk.ok("vdeloldusers", "-d", D, "-a", "100", "-D")
    for n in old_ones:
        single.call_ok("vdeluser", f"{n}@{D}")
    for name in ("vpasswd", "vpasswd.cdb", ".dir-control", ".dir_control_free"):
        mine = (bulk.ddir(D) / name).read_bytes().replace(b"/bulk/", b"/one1/")  # same length: cdb offsets hold
        assert mine == (single.ddir(D) / name).read_bytes(), name
    homes = [sorted(str(p.relative_to(s.ddir(D))) for p in s.ddir(D).rglob("*") if p.name == "Maildir")
             for s in stores]
    assert homes[0] == homes[1] and len(homes[0]) == 131 - len(old_ones)


def test_i12_03_remote_vmoddomlimits_through_a_real_daemon(tmp_path):
    """Over vpopmaild (get_limits / set_limits / del_limits) vmoddomlimits writes the same bytes;
    vdeloldusers and vpopbull say in one line that they need the local store."""
    from daemon_helpers import Daemon, build_store
    from storeenv import run as env_run

    env = build_store(tmp_path)
    limits = os.path.join(env["VPOPMAIL_DIR"], "domains", D, ".qmailadmin-limits")
    with Daemon(env) as d:
        renv = dict(env, VCLI_REMOTE=f"127.0.0.1:{d.port}", VCLI_LOGIN="sysadmin@admin.test",
                    VCLI_PASSWORD="SysPass1")
        r = env_run(renv, "vmoddomlimits", "-P", "10", "-A", "20", "-F", "5", "-R", "3", "-L", "2", "-Q", "100",
                    "-q", "10M", "-M", "1000", "-m", "500", "-g", "dp", D)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert env_run(renv, "vmoddomlimits", "-p", "cd", "-a", "m", D).returncode == 0
        with open(limits, "rb") as f:
            assert f.read() == SPEC_FILE
        assert env_run(renv, "vmoddomlimits", "-S", D).stdout == SPEC_SHOW
        r = env_run(renv, "vmoddomlimits", "-D", D)
        assert (r.returncode, r.stdout) == (0, "Limits deleted\n") and not os.path.exists(limits)
        r = env_run(renv, "vmoddomlimits", "-P", "1", "nosuch.test")
        assert r.returncode == 245 and len(r.stderr.splitlines()) == 1
        for cmd in (["vdeloldusers", "-e", "-D"], ["vpopbull", "-n", D]):
            r = env_run(renv, *cmd)
            assert (r.returncode, r.stderr) == (255, f"Error: {cmd[0]} works on the local store only\n"), r
