"""Issue 11 item 2: domain listings stream.

`vuserinfo -D DOMAIN` (classic) and `vcli vuserinfo -D DOMAIN -o json|csv` write one user at a
time: their peak memory must not grow with the domain (measured as the child's peak RSS at 2,000
and at 20,000 users), and the work that is the same for every user is done once.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from storeenv import make_env, tool
from typer.testing import CliRunner

from vcli.config import load_settings
from vcli.store.passwords import hash_password
from vcli.store.store import NewUser, Store

SMALL, BIG = 2_000, 20_000
MB = 1024 * 1024


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """small.test (2,000 users) and big.test (20,000), made through the bulk path, pre-hashed."""
    env = make_env(tmp_path_factory.mktemp("stream"))
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    hashed = hash_password("Stream-pw1")
    for domain, n in (("small.test", SMALL), ("big.test", BIG)):
        st.add_domain(domain, "Pm-pass1x")
        st.add_users(domain, [NewUser(f"u{i:05d}", hashed=hashed, gecos=f"User {i}") for i in range(n)])
    return env


# Linux carries a parent's resident size into a forked child's ru_maxrss (and across exec), so
# the test process (big after making the store) cannot measure its child directly: a fresh,
# small interpreter starts the command and reports the command's own peak.
LAUNCH = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(p.pid, 0)
sys.stderr.write(f"PEAK {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _peak(env: dict, argv: list[str], out_path) -> int:
    """Peak RSS in bytes of the command, its stdout into out_path."""
    with open(out_path, "wb") as out:
        r = subprocess.run([sys.executable, "-c", LAUNCH, tool(argv[0]), *argv[1:]], env=env, stdout=out,
                           stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, r.stderr
    peak = [line for line in r.stderr.splitlines() if line.startswith("PEAK ")]
    assert len(peak) == 1, r.stderr
    return int(peak[0].split()[1]) * 1024  # kilobytes on Linux


@pytest.mark.parametrize("argv,count", [
    (["vuserinfo", "-D"], lambda text: sum(line.startswith("name:   ") for line in text.splitlines())),
    (["vcli", "vuserinfo", "-o", "json", "-D"], lambda text: len(json.loads(text))),
    (["vcli", "vuserinfo", "-o", "csv", "-D"], lambda text: len(list(csv.DictReader(io.StringIO(text))))),
], ids=["classic", "json", "csv"])
def test_i11_02_listing_memory_does_not_grow_with_the_domain(env, tmp_path, argv, count):
    """Peak RSS at 20,000 users <= 1.5x the peak at 2,000 + 8 MB (before: 70 / 130 / 49 MB at 20k
    against 20 / 29 / 21 MB at 2k); the listing is complete and well formed."""
    small = _peak(env, [*argv, "small.test"], tmp_path / "small")
    big = _peak(env, [*argv, "big.test"], tmp_path / "big")
    assert count((tmp_path / "small").read_text()) == SMALL + 1  # and postmaster
    assert count((tmp_path / "big").read_text()) == BIG + 1
    assert big <= 1.5 * small + 8 * MB, f"peak RSS {small / MB:.1f} MB at {SMALL} users, {big / MB:.1f} MB at {BIG}"


def test_i11_02_per_domain_work_done_once_and_usage_only_when_shown(env, monkeypatch):
    """A listing reads the domain's limits once, not per user; CSV (no usage column) reads no
    maildirsize; JSON (which shows usage) reads it per user."""
    from vcli.cli.app import app

    calls = {"limits": 0, "usage": 0}
    real_limits, real_usage = Store.limits, Store.user_usage

    def limits(self, domain):
        calls["limits"] += 1
        return real_limits(self, domain)

    def user_usage(self, user):
        calls["usage"] += 1
        return real_usage(self, user)

    monkeypatch.setattr(Store, "limits", limits)
    monkeypatch.setattr(Store, "user_usage", user_usage)
    for key in ("VPOPMAIL_DIR", "QMAIL_DIR"):
        monkeypatch.setenv(key, env[key])
    runner = CliRunner()
    for fmt, usage_reads in (("csv", 0), ("json", SMALL + 1), ("plain", 0)):
        calls.update(limits=0, usage=0)
        r = runner.invoke(app, ["vuserinfo", "-D", "small.test", "-o", fmt])
        assert r.exit_code == 0, r.output
        assert calls == {"limits": 1, "usage": usage_reads}, fmt


def test_i11_02_usage_skips_the_folder_search_only_when_there_is_none(tmp_path):
    """quota.usage takes a Maildir with a link count of 5 as folder-free only when its three
    subdirectories are new, cur and tmp themselves: a symlinked `new` beside a real `.Sent` (also
    5 links) still has .Sent counted."""
    import os

    from vcli.store import quota

    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "cur" / "1.host,S=100:2,S").write_text("x")
    assert quota.usage(str(md)) == (100, 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "2.host,S=20").write_text("x")
    os.rename(md / "new", tmp_path / "old-new")
    os.symlink(elsewhere, md / "new")
    (md / ".Sent" / "cur").mkdir(parents=True)
    (md / ".Sent" / "cur" / "3.host,S=7:2,S").write_text("x")
    assert os.stat(md).st_nlink in (5, 1)  # cur, tmp, .Sent (1: a file system without counts)
    assert quota.usage(str(md)) == (127, 3)


@pytest.mark.parametrize("skip", [None, "carol"], ids=["in-step", "out-of-step"])
def test_i11_02_listing_reads_beside_a_child_give_the_same_answers(st, monkeypatch, skip):
    """listing.usage_and_lastauth with its forked child (every other user's Maildir and
    lastauth read there) gives what reading each here gives: usage with mail and NOQUOTA,
    lastauth missing, created and with odd bytes; and a child out of step (the listing it was
    given skips a user the child's own listing has) is noticed and the rest read here."""
    import os

    from cli_helpers import patched_environ

    from vcli.cli import listing
    from vcli.config import load_settings
    from vcli.store.store import Store

    for i, name in enumerate(("alice", "bob", "carol", "dave", "erin", "frank", "grace")):
        st.call_ok("vadduser", *(["-q", "NOQUOTA"] if i == 3 else ["-q", "5M"]), f"{name}@example.test", "Pass-word1")
    with patched_environ(st.env):
        store = Store(load_settings())
        users = list(store.list_users("example.test"))
        by = {u.name: u for u in users}
        with open(os.path.join(by["bob"].dir, "Maildir", "new", "1.host,S=1234"), "w") as f:
            f.write("x")
        with open(os.path.join(by["erin"].dir, "lastauth"), "wb") as f:
            f.write(b"198.51.100.7\tw\xe9ird")
        os.unlink(os.path.join(by["frank"].dir, "lastauth"))
        pairs = [(u, u.name.upper()) for u in users if u.name != skip]
        serial = [(u.name, x, us, a) for u, x, us, a in listing.usage_and_lastauth(store, "example.test", iter(pairs))]
        monkeypatch.setattr(listing, "BESIDE_FROM", 1)
        forked = [(u.name, x, us, a) for u, x, us, a in listing.usage_and_lastauth(store, "example.test", iter(pairs))]
    assert forked == serial
    got = {name: (us, a) for name, _, us, a in forked}
    assert got["bob"][0].bytes == 1234 and got["bob"][0].messages == 1
    assert got["dave"][0].percent is None and got["frank"][1] is None
    assert got["erin"][1][1] == "198.51.100.7\twéird"


@pytest.mark.parametrize("selectors", ["", "l", "Q", "nQ", "lq", "n"])
def test_i11_02_classic_listing_beside_a_child_prints_what_it_prints_alone(st, monkeypatch, selectors):
    """The classic `vuserinfo -D` reads its lastauth files and quota users' usage beside a forked
    child (listing.usage_and_lastauth, usage only for users with a quota): the same lines as
    reading each user here, for the full view and each selector set that reads the disk, and
    for one that reads nothing (no child then)."""
    import os

    from cli_helpers import patched_environ

    from vcli.cli import actions, listing
    from vcli.config import load_settings
    from vcli.store.store import Store

    for i, name in enumerate(("alice", "bob", "carol", "dave", "erin", "frank", "grace")):
        st.call_ok("vadduser", *(["-q", "NOQUOTA"] if i in (3, 6) else ["-q", "5M"]), f"{name}@example.test", "Pass-word1")
    with patched_environ(st.env):
        store = Store(load_settings())
        by = {u.name: u for u in store.list_users("example.test")}
        with open(os.path.join(by["bob"].dir, "Maildir", "new", "1.host,S=2621440"), "w") as f:
            f.write("x")  # half of bob's 5M
        with open(os.path.join(by["erin"].dir, "lastauth"), "wb") as f:
            f.write(b"198.51.100.7")
        os.unlink(os.path.join(by["frank"].dir, "lastauth"))
        reads = []
        real_lastauth = store.lastauth
        monkeypatch.setattr(store, "lastauth", lambda *a: reads.append(1) or real_lastauth(*a))
        alone = list(actions.user_info_lines(store, None, "example.test", selectors))
        assert len(reads) == (len(by) if not selectors or "l" in selectors else 0)  # none unless shown
        monkeypatch.setattr(listing, "BESIDE_FROM", 1)
        forks = []
        real_fork = os.fork
        monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real_fork())
        beside = list(actions.user_info_lines(store, None, "example.test", selectors))
    assert beside == alone
    assert len(forks) == (0 if selectors == "n" else 1)
    text = "\n".join(alone)
    if not selectors:
        assert "usage:     50%" in text and "usage:     NOQUOTA" in text
        assert "last auth: Never logged in" in text
    if "Q" in selectors:
        assert "50%" in text


def test_i11_02_json_indented_writes_what_json_dumps_writes():
    """The listing's JSON encoder (rows' keys encoded once per shape) against json.dumps(indent=2),
    nested at the depth a listing uses: rows of one shape again and again, other shapes, and the
    values it hands to json itself."""
    import json

    from vcli.cli.output import json_indented

    row = {"address": "a@b.test", "clear": None, "uid": "1", "gid": 3, "flag_names": ["no_pop", "no_imap"],
           "domain_flags": [], "gecos": "Zoë \"q\" \\ \u2028 \x01", "usage": {"bytes": 5, "messages": 0, "percent": None}}
    values = [row, dict(row, gecos="other"), dict(row, flag_names=["x"]), {"ok": True, "no": False, "f": 1.5},
              {}, [], [1, "a", None, [], {}], {"nested": [{"a": [1, 2]}, {"b": {}}]}, {1: "int key"},
              "text", 7, None, True, [["deep", ["er"]]], {"mixed": ["a", 1]}, {"t": ("x", "y")}]
    values += [dict(row, gid=i, address=f"u{i}@b.test") for i in range(100)]
    values += [{f"k{i}": i} for i in range(100)]  # more shapes than it remembers
    for v in values:
        assert json_indented(v) == json.dumps(v, indent=2).replace("\n", "\n  "), v
        assert json_indented(v, "\n") == json.dumps(v, indent=2), v


def _usage_by_walk(maildir: str) -> tuple[int, int]:
    """What quota.usage must say, by the plainest walk: new/ and cur/ of the Maildir and of each
    real `.folder` directory in it but .Trash; names starting with '.' and T-flagged skipped;
    the size from ',S=' else the file's."""
    import os
    import stat as st_

    try:
        names = os.listdir(maildir)
    except OSError:
        return 0, 0
    folders = [maildir] + [os.path.join(maildir, n) for n in names if n.startswith(".") and n != ".Trash"
                           and st_.S_ISDIR(os.lstat(os.path.join(maildir, n)).st_mode)]
    size = count = 0
    for folder in folders:
        for sub in ("new", "cur"):
            path = os.path.join(folder, sub)
            if not os.path.isdir(path):
                continue
            for name in os.listdir(path):
                if name.startswith(".") or "T" in name.partition(":2,")[2]:
                    continue
                s = name.split(",S=", 1)[1] if ",S=" in name else ""
                digits = s[: len(s) - len(s.lstrip("0123456789"))]
                size += int(digits) if digits else os.lstat(os.path.join(path, name)).st_size
                count += 1
    return size, count


def test_i11_02_usage_of_odd_maildirs_matches_a_plain_walk(tmp_path):
    """quota.usage (its shortcut for a folder-free Maildir written out for speed) agrees with a
    plain walk on the shapes a site has: empty, mail with and without S=, T-flagged, dot files,
    folders and .Trash, a missing tmp/new, a symlinked Maildir, a Maildir that is a file, none."""
    import os

    from vcli.store import quota

    def maildir(name, subs=("new", "cur", "tmp")):
        md = tmp_path / name / "Maildir"
        md.mkdir(parents=True)
        for s in subs:
            (md / s).mkdir()
        return md

    shapes = []
    shapes.append(maildir("empty"))
    md = maildir("mail")
    (md / "new" / "1.h,S=120").write_text("x")
    (md / "cur" / "2.h:2,S").write_text("hello")  # no S=: its size
    (md / "cur" / "3.h,S=9:2,ST").write_text("x")  # trashed
    (md / "cur" / ".hidden,S=4").write_text("x")
    shapes.append(md)
    md = maildir("folders")
    (md / ".Sent" / "cur").mkdir(parents=True)
    (md / ".Sent" / "cur" / "4.h,S=30:2,S").write_text("x")
    (md / ".Trash" / "cur").mkdir(parents=True)
    (md / ".Trash" / "cur" / "5.h,S=1000:2,S").write_text("x")
    shapes.append(md)
    md = maildir("notmp", subs=("new", "cur"))
    (md / "cur" / "6.h,S=5:2,").write_text("x")
    shapes.append(md)
    md = maildir("nonew", subs=("cur", "tmp", ".Drafts"))
    (md / ".Drafts" / "new").mkdir()
    (md / ".Drafts" / "new" / "7.h,S=11").write_text("x")
    shapes.append(md)
    link = tmp_path / "linked"
    link.mkdir()
    os.symlink(tmp_path / "mail" / "Maildir", link / "Maildir")
    shapes.append(link / "Maildir")
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / "Maildir").write_text("not a directory")
    shapes.append(tmp_path / "file" / "Maildir")
    shapes.append(tmp_path / "none" / "Maildir")
    for md in shapes:
        assert quota.usage(str(md)) == _usage_by_walk(str(md)), md
    assert quota.usage(str(tmp_path / "mail" / "Maildir")) == (125, 2)
    assert quota.usage(str(tmp_path / "folders" / "Maildir")) == (30, 1)


def test_i11_02_listing_times_memoized_by_second_are_strftime_s(monkeypatch):
    """user_json's created/last_auth stamps come from a memo by whole second: the same text as
    strftime(localtime(t)) for whole, fractional, negative and repeated times, in a zone with
    DST, and a full memo is started again rather than grown."""
    import time

    from vcli.cli import output

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        output._ISO.clear()
        times = [0, 0.999, 1.0, -0.5, -1.0, 1711846799.7, 1711846800.2, 1729990799.0, 1729990800.5,
                 1764800000.25, 1764800000.75]
        for t in times * 2:
            assert output._iso_second(t) == time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t)), t
        monkeypatch.setattr(output, "_ISO", {i: "x" for i in range(100, 100 + 65536)})
        assert output._iso_second(5.0) == time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(5))
        assert len(output._ISO) == 1
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
        output._ISO.clear()
