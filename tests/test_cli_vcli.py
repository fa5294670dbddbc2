"""`vcli <command>` (the Typer app) against the classic names: the same operations give the same
stdout, stderr and exit status and leave the same store; `--format json|csv` carry the README's keys."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

import pytest
from cli_helpers import (
    CliStore,
    mask_dates,
    mask_hashes,
    masked_vpasswd,
    snapshot,
    vpasswd_cdb,
)

D = "example.test"

# (classic argv, vcli argv): the same operation spelled both ways
PAIRS = [
    (["vadddomain", D, "Pm-pass1"], ["vadddomain", D, "Pm-pass1"]),
    (["vadddomain", "-q", "1000000", "-e", "postmaster", "tmp.test", "Pm-pass1"],
     ["vadddomain", "--quota", "1000000", "--catchall", "postmaster", "tmp.test", "Pm-pass1"]),
    (["vadduser", "-q", "5M", "-c", "Bob B", "bob@example.test", "Bob-pw1"],
     ["vadduser", "--quota", "5M", "--comment", "Bob B", "bob@example.test", "Bob-pw1"]),
    (["vadduser", "carol@example.test", "Carol-pw1"], ["vadduser", "carol@example.test", "Carol-pw1"]),
    (["vadduser", "-e", "$1$abcdefgh$0123456789abcdefghijkl", "dave@example.test"],
     ["vadduser", "--encrypted", "$1$abcdefgh$0123456789abcdefghijkl", "dave@example.test"]),
    (["vmoduser", "-p", "-s", "-a", "bob@example.test"],
     ["vmoduser", "--no-pop", "--no-smtp", "--domain-admin-privileges", "bob@example.test"]),
    (["vmoduser", "-x", "-w", "-i", "carol@example.test"], ["vmoduser", "-x", "-w", "-i", "carol@example.test"]),
    (["vmoduser", "-b", "-q", "2M", "-c", "Dave D", D], ["vmoduser", "--bounce-mail", "-q", "2M", "-c", "Dave D", D]),
    (["vsetuserquota", "carol@example.test", "50m"], ["vsetuserquota", "carol@example.test", "50m"]),
    (["vpasswd", "carol@example.test", "New-pw1"], ["vpasswd", "carol@example.test", "New-pw1"]),
    (["valias", "-i", "alice@example.test", "info@example.test"],
     ["valias", "--insert", "alice@example.test", "info@example.test"]),
    (["valias", "-i", "&x@y.test", "john.doe@example.test"], ["valias", "-i", "&x@y.test", "john.doe@example.test"]),
    (["vaddaliasdomain", D, "alias.test"], ["vaddaliasdomain", D, "alias.test"]),
    (["vuserinfo", "bob@example.test"], ["vuserinfo", "bob@example.test"]),
    (["vuserinfo", "-D", D], ["vuserinfo", "-D", D]),
    (["vuserinfo", "-q", "-n", "carol@alias.test"], ["vuserinfo", "--fields", "qn", "carol@alias.test"]),
    (["vdominfo"], ["vdominfo"]),
    (["vdominfo", "alias.test"], ["vdominfo", "alias.test"]),
    (["vdominfo", "-t", "-r", D], ["vdominfo", "--fields", "rt", D]),
    (["valias", "-s", D], ["valias", D]),
    (["valias", "-n", D], ["valias", "--names", D]),
    (["valias", "-d", "john.doe@example.test"], ["valias", "--delete", "john.doe@example.test"]),
    # failures: same text, same status
    (["vadduser", "bob@example.test", "x-1"], ["vadduser", "bob@example.test", "x-1"]),
    (["vadduser", "zed@nodomain.test", "x-1"], ["vadduser", "zed@nodomain.test", "x-1"]),
    (["vadduser", "-c", "a:b", "zed@example.test", "x-1"], ["vadduser", "-c", "a:b", "zed@example.test", "x-1"]),
    (["vuserinfo", "nobody@example.test"], ["vuserinfo", "nobody@example.test"]),
    (["vdominfo", "nodomain.test"], ["vdominfo", "nodomain.test"]),
    (["vdeluser", "nobody@example.test"], ["vdeluser", "nobody@example.test"]),
    (["vsetuserquota", "nobody@example.test", "1M"], ["vsetuserquota", "nobody@example.test", "1M"]),
    (["vmoduser", "-p", "nobody@example.test"], ["vmoduser", "--no-pop", "nobody@example.test"]),
    (["vpasswd", "nobody@example.test", "x-1"], ["vpasswd", "nobody@example.test", "x-1"]),
    (["valias", "nothere@example.test"], ["valias", "nothere@example.test"]),
    (["vadddomain", D, "x-1"], ["vadddomain", D, "x-1"]),
    (["vaddaliasdomain", D, "alias.test"], ["vaddaliasdomain", D, "alias.test"]),
    (["vdeldomain", D], ["vdeldomain", D]),
    # and the ends of lives
    (["vdeluser", "carol@example.test"], ["vdeluser", "carol@example.test"]),
    (["vdeldomain", "tmp.test"], ["vdeldomain", "tmp.test"]),
]


def _normal(text: str) -> str:
    return mask_dates(mask_hashes(text))


def _store_view(base) -> dict:
    """The store's files with hashes masked; each vpasswd.cdb checked against its own vpasswd first."""
    snap = snapshot(base)
    out = {}
    for rel, (mode, data) in snap.items():
        if rel.endswith("/vpasswd.cdb"):
            assert data == vpasswd_cdb(snap[rel[: -len(".cdb")]][1]), rel
            out[rel] = (mode, "checked")
        elif rel.endswith("/vpasswd"):
            out[rel] = (mode, masked_vpasswd(data))
        else:
            out[rel] = (mode, data)
    return out


def test_vcli_subcommands_match_the_classic_names(base):
    results = {}
    views = {}
    for side in ("classic", "vcli"):
        st = CliStore(base / "store")
        got = []
        for classic, modern in PAIRS:
            # both in-process (the console scripts themselves are run by the other tests)
            r = st.call(classic[0], *classic[1:]) if side == "classic" else st.call_vcli(*modern)
            got.append((r.rc, _normal(r.out), r.err))
        results[side] = got
        views[side] = _store_view(st.base)
        shutil.rmtree(st.base)
    for (classic, _), a, b in zip(PAIRS, results["classic"], results["vcli"], strict=True):
        assert a == b, classic
    assert views["classic"] == views["vcli"]
    # the run did what it says (not two identical failures)
    assert [rc for rc, _, _ in results["classic"]][:22] == [0] * 22


@pytest.fixture()
def st(base):
    s = CliStore(base)
    s.call_ok("vadddomain", D, "Pm-pass1")
    s.call_ok("vadduser", "-q", "7000000", "bob@example.test", "Bob-pw1")
    s.call_ok("vmoduser", "-p", "-a", "bob@example.test")
    (s.ddir(D) / ".qmailadmin-limits").write_text("disable_smtp\n")
    s.call_ok("vaddaliasdomain", D, "alias.test")
    return s


USER_KEYS = {"address", "name", "domain", "passwd", "clear", "uid", "gid", "flags", "flag_names", "domain_flags",
             "gecos", "dir", "quota", "created", "last_auth", "last_auth_ip", "usage"}
DOMAIN_KEYS = {"domain", "real", "alias_of", "uid", "gid", "dir", "users", "aliases"}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}")


def test_vuserinfo_json(st):
    r = st.run("vcli", "vuserinfo", "bob@example.test", "--format", "json")
    assert (r.rc, r.err) == (0, "")
    u = json.loads(r.out)
    assert set(u) == USER_KEYS and set(u["usage"]) == {"bytes", "messages", "percent"}
    assert u["address"] == "bob@example.test" and u["name"] == "bob" and u["domain"] == D
    assert u["passwd"] == st.fields(D, "bob")[1] and u["clear"] is None
    assert u["uid"] == "1" and u["gid"] == 2 + 4096 and u["flags"] == 2 + 2048 + 4096
    assert u["flag_names"] == ["no_pop", "no_smtp", "domain_admin_privileges"]
    assert u["domain_flags"] == ["no_smtp"]
    assert u["gecos"] == "bob" and u["dir"] == f"{st.ddir(D)}/bob" and u["quota"] == "7000000S"
    assert ISO.fullmatch(u["created"]) and u["last_auth"] is None and u["last_auth_ip"] is None
    assert u["usage"] == {"bytes": 0, "messages": 0, "percent": 0}
    r = st.run("vcli", "vuserinfo", "-D", D, "-o", "json")
    rows = json.loads(r.out)
    assert [x["name"] for x in rows] == ["bob", "postmaster"] and all(set(x) == USER_KEYS for x in rows)
    assert rows[1]["usage"]["percent"] is None  # NOQUOTA
    # through an alias domain the record names the real domain
    assert json.loads(st.run("vcli", "vuserinfo", "bob@alias.test", "-o", "json").out)["domain"] == D
    r = st.run("vcli", "vuserinfo", "nobody@example.test", "-o", "json")
    assert r.t == (255, "", "no such user nobody@example.test\n")


def test_vdominfo_json(st):
    r = st.run("vcli", "vdominfo", "--format", "json")
    assert (r.rc, r.err) == (0, "")
    rows = json.loads(r.out)
    assert all(set(x) == DOMAIN_KEYS for x in rows)
    assert rows == [
        {"domain": "alias.test", "real": D, "alias_of": D, "uid": 89, "gid": 89, "dir": str(st.ddir(D)),
         "users": 2, "aliases": []},
        {"domain": D, "real": D, "alias_of": None, "uid": 89, "gid": 89, "dir": str(st.ddir(D)),
         "users": 2, "aliases": ["alias.test"]},
    ]
    one = json.loads(st.run("vcli", "vdominfo", D, "-o", "json").out)
    assert one == rows[1]


def test_csv_and_table_formats(st):
    r = st.run("vcli", "vuserinfo", "-D", D, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert [x["address"] for x in rows] == ["bob@example.test", "postmaster@example.test"]
    assert rows[0]["flag_names"] == "no_pop;no_smtp;domain_admin_privileges"  # a ;-separated list
    r = st.run("vcli", "vdominfo", "--format", "csv")
    assert [x["domain"] for x in csv.DictReader(io.StringIO(r.out))] == ["alias.test", D]
    r = st.run("vcli", "vdominfo", "--format", "table")
    assert r.rc == 0 and "alias.test" in r.out and D in r.out
    st.call_ok("valias", "-i", "bob@example.test", "info@example.test")
    r = st.run("vcli", "valias", D, "-o", "json")
    assert json.loads(r.out) == [{"alias": "info@example.test", "line": "bob@example.test"}]
    assert json.loads(st.run("vcli", "valias", "--names", D, "-o", "json").out) == [{"alias": "info"}]


def test_vcli_only_options(st):
    assert st.run("vcli", "vadduser", "--exist-ok", "bob@example.test", "x-1").t == (0, "", "")
    assert st.run("vcli", "vdeluser", "--missing-ok", "nobody@example.test").t == (0, "", "")
    assert st.run("vcli", "vadddomain", "--exist-ok", D, "x-1").t == (0, "", "")
    assert st.run("vcli", "vdeldomain", "--missing-ok", "nodomain.test").t == (0, "", "")
    pw = st.base / "pw.txt"
    pw.write_text("From-file1\nignored\n")
    st.ok("vcli", "vadduser", "carol@example.test", "--password-file", str(pw))
    from cli_helpers import verify

    assert verify("From-file1", st.fields(D, "carol")[1])
    st.ok("vcli", "vpasswd", "carol@example.test", "--password-file", "-", input="From-stdin1\n")
    assert verify("From-stdin1", st.fields(D, "carol")[1])
    st.ok("vcli", "vmoduser", "--unset", "no_pop", "--unset", "domain-admin-privileges", "bob@example.test")
    assert st.fields(D, "bob")[3] == "0"
    r = st.run("vcli", "vadduser", "-r", "--random-length", "16", "rnd@example.test")
    assert r.rc == 0 and re.fullmatch(r"Random password: \S{16}\n", r.out)
