"""Golden tests of the on-disk formats against spec/store.md, read back by independent code."""

from __future__ import annotations

import functools
import os
import stat
import struct

import cdblib
import pytest
from fuzzscale import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from storeenv import make_env

from vcli.config import load_settings
from vcli.store import cdb, quota
from vcli.store.dircontrol import DirControl
from vcli.store.limits import Limits
from vcli.store.qmail import domain_sort_key, users_cdb
from vcli.store.store import NewUser, Store
from vcli.store.vpasswd import build_cdb

SPEC_LINES = [
    b"postmaster:$1$abcdefgh$0123456789abcdefghijkl:1:0:Postmaster:/home/vpopmail/domains/example.com/postmaster:NOQUOTA\n",
    b"bob:$6$saltsalt$hash:1:0:Bob Smith:/home/vpopmail/domains/example.com/bob:1048576S,1000C\n",
]


@pytest.fixture()
def store(tmp_path):
    env = make_env(tmp_path)
    s = load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]})
    return Store(s)


def test_cdb_worked_example_byte_for_byte():
    data = build_cdb(SPEC_LINES)
    assert len(data) == 2296
    entry = lambda i: data[i * 8 : i * 8 + 8]  # noqa: E731
    assert entry(0) == bytes.fromhex("d808000000000000")
    assert entry(1) == bytes.fromhex("d808000002000000")
    assert all(entry(i) == bytes.fromhex("e808000000000000") for i in range(2, 170))
    assert entry(170) == bytes.fromhex("e808000002000000")
    assert all(entry(i) == bytes.fromhex("f808000000000000") for i in range(171, 256))
    assert data[2048:2056] == bytes.fromhex("0a00000067000000") and data[2056:2066] == b"postmaster"
    assert data[2169:2177] == bytes.fromhex("0300000054000000") and data[2177:2180] == b"bob"
    assert data[2264:2280] == bytes.fromhex("0138385400080000") + bytes(8)
    assert data[2280:2296] == bytes(8) + bytes.fromhex("aa47870b79080000")


def test_cdb_last_line_without_newline_is_not_indexed():
    data = build_cdb([SPEC_LINES[0], SPEC_LINES[1].rstrip(b"\n")])
    reader = cdblib.Reader(data)
    assert reader.get(b"postmaster") is not None and reader.get(b"bob") is None


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=40)), max_size=60))
def test_cdb_writer_agrees_with_independent_reader(tmp_path_factory, recs):
    data = cdb.build(recs)
    path = tmp_path_factory.mktemp("cdb") / "x.cdb"
    path.write_bytes(data)
    theirs = cdblib.Reader(data)
    first: dict[bytes, bytes] = {}
    for k, v in recs:
        first.setdefault(k, v)
    with cdb.CdbReader(path) as ours:
        for k, v in first.items():
            assert ours.get(k) == v == theirs.get(k)
    assert list(cdb.records(data)) == [(k, v) for k, v in recs]


def test_store_cdbs_read_back_by_pure_cdb(store):
    store.add_domain("example.test", "Pm-pass1")
    store.add_alias_domain("example.test", "alias.test")
    store.add_user("example.test", NewUser("bob", "Bob-pass1", gecos="Bob Smith", quota="1M"))
    ddir = os.path.join(store.root, "domains", "example.test")
    lines = open(os.path.join(ddir, "vpasswd"), "rb").read().splitlines()
    reader = cdblib.Reader(open(os.path.join(ddir, "vpasswd.cdb"), "rb").read())
    assert list(reader.keys()) == [x.split(b":", 1)[0] for x in lines]
    for line in lines:
        name, value = line.split(b":", 1)
        assert reader.get(name) == value
    users = cdblib.Reader(open(os.path.join(store.s.qmail_dir, "users", "cdb"), "rb").read())
    value = b"example.test\0%d\0%d\0%s\0-\0" % (store.s.vpopmail_uid, store.s.vpopmail_gid, ddir.encode())
    assert users.get(b"!example.test-") == value
    assert users.get(b"!alias.test-") == value
    assert users.get(b"") == b"-"


def test_users_cdb_from_assign_as_qmail_newu_makes_it():
    assign = (b"+admin.test-:admin.test:89:89:/home/vpopmail/domains/admin.test:-::\n"
              b"+Example.test-:example.test:89:89:/home/vpopmail/domains/example.test:-::\n.\n")
    recs = list(cdb.records(users_cdb(assign)))
    assert recs == [
        (b"!admin.test-", b"admin.test\x0089\x0089\x00/home/vpopmail/domains/admin.test\x00-\x00"),
        (b"!example.test-", b"example.test\x0089\x0089\x00/home/vpopmail/domains/example.test\x00-\x00"),
        (b"", b"-"),
    ]


def test_domain_sort_key_moves_the_last_two_labels_first():
    assert domain_sort_key(b"a.b.example.com") == b"example.com.a.b"
    assert domain_sort_key(b"mail.example.co.uk") == b"co.uk.mail.example"
    assert domain_sort_key(b"example.com") == b"example.com"


@pytest.mark.parametrize("n, expected", [
    (1, ""), (99, ""), (100, "0"), (199, "0"), (200, "1"), (6200, "z"), (6300, "0/0"), (6400, "0/1"),
    (12400, "0/z"), (12500, "1/0"), (390600, "z/z"), (390700, "0/0/0"), (1000000, "1/a/H"),
])
def test_hash_dir_sequence(n, expected):
    assert _hash_dirs()[n - 1] == expected


@functools.cache
def _hash_dirs() -> list[str]:
    """The hash dir of entries 1 .. 1,000,000 of one domain (spec/store.md §6.2 table)."""
    d = DirControl()
    return [d.next_dir() for _ in range(1000000)]


def test_dir_control_file_bytes_and_the_0_2_2_quirk():
    d = DirControl()
    d.next_dir()
    assert d.dump() == b"1\n0\n3\n0 0 0\n61 61 61\n0 2 4\n0 0 0\n\n"
    again = DirControl.parse(d.dump())
    again.next_dir()
    assert again.dump() == b"2\n0\n3\n0 0 0\n61 61 61\n0 2 2\n0 0 0\n\n"


def test_crossing_the_100_user_boundary(store):
    store.add_domain("example.test", "Pm-pass1")
    for i in range(1, 151):
        store.add_user("example.test", NewUser(f"user{i:03d}", hashed="$6$saltsalt$x"))
    ddir = os.path.join(store.root, "domains", "example.test")
    flat = sorted(n for n in os.listdir(ddir) if n.startswith("user") or n == "postmaster")
    assert len(flat) == 99  # postmaster + user001..user098
    assert sorted(os.listdir(os.path.join(ddir, "0"))) == [f"user{i:03d}" for i in range(99, 151)]
    assert open(os.path.join(ddir, ".dir-control"), "rb").read() == b"151\n0\n3\n0 0 0\n61 61 61\n0 2 2\n0 0 0\n0\n"
    vpasswd = open(os.path.join(ddir, "vpasswd"), "rb").read()
    assert f":{ddir}/0/user099:NOQUOTA\n".encode() in vpasswd
    assert f":{ddir}/user098:NOQUOTA\n".encode() in vpasswd
    # deleting a hashed user frees its slot; the next add takes it and the counter follows
    store.del_user("user120", "example.test")
    assert open(os.path.join(ddir, ".dir_control_free"), "rb").read() == b"0\n"
    assert open(os.path.join(ddir, ".dir-control"), "rb").read().startswith(b"150\n")
    store.add_user("example.test", NewUser("late", hashed="$6$saltsalt$x"))
    assert os.path.isdir(os.path.join(ddir, "0", "late"))
    assert open(os.path.join(ddir, ".dir_control_free"), "rb").read() == b""
    assert open(os.path.join(ddir, ".dir-control"), "rb").read().startswith(b"151\n")


def test_user_tree_and_modes(store):
    store.add_domain("example.test", "Pm-pass1")
    store.add_user("example.test", NewUser("bob", "Bob-pass1", quota="5000000"))
    ddir = os.path.join(store.root, "domains", "example.test")
    home = os.path.join(ddir, "bob")
    mode = lambda p: stat.S_IMODE(os.lstat(p).st_mode)  # noqa: E731
    for sub in ("", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
        assert mode(os.path.join(home, sub)) == 0o700
    assert open(os.path.join(home, "lastauth"), "rb").read() == b"0.0.0.0"
    assert mode(os.path.join(home, "lastauth")) == 0o600
    assert open(os.path.join(home, "Maildir", "maildirsize"), "rb").read() == b"5000000S\n0 0\n"
    assert mode(os.path.join(home, "Maildir", "maildirsize")) == 0o600
    assert sorted(os.listdir(os.path.join(home, "Maildir", "tmp"))) == []
    for name in ("vpasswd", "vpasswd.cdb", ".qmail-default", ".vpasswd.lock", ".dir-control"):
        assert mode(os.path.join(ddir, name)) == 0o600, name
    assert mode(ddir) == 0o700
    assert open(os.path.join(ddir, ".qmail-default"), "rb").read() == (
        f"| {store.root}/bin/vdelivermail '' delete\n".encode())
    line = open(os.path.join(ddir, "vpasswd"), "rb").read().splitlines()[0].decode()
    name, pw, uid, gid, gecos, d, q = line.split(":")
    assert (name, uid, gid, gecos, d, q) == ("bob", "1", "0", "bob", home, "5000000S")
    assert pw.startswith("$6$") and len(pw) == 98 and pw[11] == "$"


@pytest.mark.parametrize("text, stored", [
    ("NOQUOTA", "NOQUOTA"), ("noquota", ""), ("1000000", "1000000S"), ("50M", "52428800S"),
    ("5M,1000C", "5242880S,1000C"), ("2000000S,100C", "2000000S,100C"), ("1MB", "1048576S"), ("1M", "1048576S"),
    ("1mb", "1048576S"), ("1024K", "1048576S"), ("1KB", "1024S"), ("10mbs,1000C", "10485760S,1000C"),
    ("1000C,10MBS", "10485760S,1000C"), ("1000C", "1000C"), ("1000c", "1000S"), ("0", ""), ("abc", ""),
    ("", ""), ("5G", "5S"), ("1.5M", "1048576S"), ("1048576S,0C", "1048576S"),
])
def test_quota_normalisation_table(text, stored):
    assert quota.normalize(text) == stored


def test_limits_file_as_vpopmail_writes_it():
    lim = Limits(maxpopaccounts=10, maxaliases=20, maxforwards=5, maxautoresponders=3, maxmailinglists=2,
                 quota=100, maxmsgcount=1000, default_quota=10485760, default_maxmsgcount=500,
                 disable_pop=True, disable_password_changing=True, perm_account=5, perm_alias=2)
    data = lim.dump()
    assert len(data) == 325
    assert data.startswith(b"maxpopaccounts: 10\nmaxaliases: 20\n")
    assert b"\ndisable_pop\ndisable_password_changing\nperm_account: 5\n" in data
    assert Limits.parse(data) == lim
    assert lim.flag_mask() == 3


def test_vpasswd_field_packing_in_cdb_records():
    value = struct.unpack_from("<II", build_cdb(SPEC_LINES), 2048)
    assert value == (10, len(SPEC_LINES[0]) - len(b"postmaster:") - 1)
