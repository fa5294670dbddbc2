"""The cdb writer and reader against spec/store.md §4, checked with the independent `pure-cdb`."""

from __future__ import annotations

import struct

import cdblib
from fuzzscale import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from vcli.store import cdb, qmail
from vcli.store.store import NewUser
from vcli.store.vpasswd import build_cdb, split_lines

# store.md §4.3: the 224-byte vpasswd of the worked example
PM_LINE = (b"postmaster:$1$abcdefgh$0123456789abcdefghijkl:1:0:Postmaster:"
           b"/home/vpopmail/domains/example.com/postmaster:NOQUOTA\n")
BOB_LINE = b"bob:$6$saltsalt$hash:1:0:Bob Smith:/home/vpopmail/domains/example.com/bob:1048576S,1000C\n"
WORKED_VPASSWD = PM_LINE + BOB_LINE


def header(data: bytes) -> list[tuple[int, int]]:
    return [struct.unpack_from("<II", data, 8 * i) for i in range(256)]


def test_hash_values_of_the_worked_example():
    assert cdb.cdb_hash(b"postmaster") == 0x54383801
    assert cdb.cdb_hash(b"bob") == 0x0B8747AA
    assert cdb.cdb_hash(b"") == 5381
    # bytes >= 0x80 are unsigned (cdblib's djb hash agrees)
    assert cdb.cdb_hash(b"\xff\x80") == cdblib.djb_hash(b"\xff\x80")


def test_worked_example_byte_for_byte():
    # (store.md calls this vpasswd 224 bytes; its two lines are 115 + 89 = 204, which is what the
    # record lengths 103 and 84 and the file size 2296 of the example imply)
    assert len(WORKED_VPASSWD) == 204
    data = build_cdb(split_lines(WORKED_VPASSWD))
    assert len(data) == 2296
    hdr = header(data)
    assert hdr[0] == (2264, 0)
    assert hdr[1] == (2264, 2)
    assert all(hdr[b] == (2280, 0) for b in range(2, 170))
    assert hdr[170] == (2280, 2)
    assert all(hdr[b] == (2296, 0) for b in range(171, 256))
    assert data[0:16] == bytes.fromhex("d808000000000000" "d808000002000000")
    assert data[2 * 8: 3 * 8] == data[169 * 8: 170 * 8] == bytes.fromhex("e808000000000000")
    assert data[170 * 8: 171 * 8] == bytes.fromhex("e808000002000000")
    assert data[255 * 8: 256 * 8] == bytes.fromhex("f808000000000000")
    # record 1 at 0x800
    assert data[2048:2056] == bytes.fromhex("0a000000" "67000000")
    assert data[2056:2066] == b"postmaster"
    assert data[2066:2169] == PM_LINE[len(b"postmaster:"):-1]
    assert len(PM_LINE[len(b"postmaster:"):-1]) == 103
    # record 2 at 2169 (0x879)
    assert data[2169:2177] == bytes.fromhex("03000000" "54000000")
    assert data[2177:2180] == b"bob"
    assert data[2180:2264] == BOB_LINE[4:-1]
    # table 1 at 2264, table 170 at 2280
    assert data[2264:2272] == bytes.fromhex("0138385400080000")
    assert data[2272:2280] == bytes(8)
    assert data[2280:2288] == bytes(8)
    assert data[2288:2296] == bytes.fromhex("aa47870b79080000")


def test_worked_example_matches_pure_cdb_writer(tmp_path):
    path = tmp_path / "ref.cdb"
    with open(path, "wb") as f, cdblib.Writer(f) as w:
        w.put(b"postmaster", PM_LINE[11:-1])
        w.put(b"bob", BOB_LINE[4:-1])
    assert build_cdb(split_lines(WORKED_VPASSWD)) == path.read_bytes()


def test_observed_sizes():
    # one record with a 176-byte value -> 2258 bytes
    line = b"postmaster:" + b"x" * 176 + b"\n"
    assert len(build_cdb([line])) == 2048 + 8 + 10 + 176 + 16 == 2258


def test_last_line_without_newline_is_not_indexed():
    data = build_cdb(split_lines(PM_LINE + BOB_LINE[:-1]))
    r = cdblib.Reader(data)
    assert r.get(b"postmaster") == PM_LINE[11:-1]
    assert r.get(b"bob") is None
    assert len(r) == 1
    assert data == build_cdb(split_lines(PM_LINE))


def test_duplicates_first_wins_and_records_in_order():
    recs = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    data = cdb.build(recs)
    assert list(cdb.records(data)) == recs
    r = cdb.CdbReader(None, data)
    assert r.get(b"a") == b"1"
    assert list(cdblib.Reader(data).gets(b"a")) == [b"1", b"3"]


def test_empty_cdb():
    data = cdb.build([])
    assert len(data) == 2048
    assert all(e == (2048, 0) for e in header(data))
    assert cdb.CdbReader(None, data).get(b"x") is None


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=30)), max_size=60),
       st.lists(st.binary(max_size=12), max_size=10))
def test_reader_and_pure_cdb_agree_with_first_values(recs, probes):
    # few distinct short keys -> plenty of duplicates and colliding tables
    data = cdb.build(recs)
    first: dict[bytes, bytes] = {}
    for k, v in recs:
        first.setdefault(k, v)
    ours = cdb.CdbReader(None, data)
    theirs = cdblib.Reader(data)
    assert len(theirs) == len(recs)
    assert list(theirs.iteritems()) == recs
    for key in list(first) + probes:
        assert ours.get(key) == first.get(key)
        assert theirs.get(key) == first.get(key)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"", b"a", b"b", b"ab", b"postmaster", b"\xff"]),
                          st.binary(max_size=5)), max_size=40))
def test_same_bytes_as_pure_cdb_writer(recs):
    import io

    buf = io.BytesIO()
    with cdblib.Writer(buf) as w:
        for k, v in recs:
            w.put(k, v)
    assert cdb.build(recs) == buf.getvalue()


def test_vpasswd_cdb_after_real_operations_read_by_pure_cdb(store):
    s = store.store
    s.add_domain("example.com", "PmPass1")
    s.add_users("example.com", [NewUser("carol", hashed="$6$x$y"), NewUser("bob", hashed="HASHB", gecos="Bob Smith"),
                                NewUser("dave", hashed="")])
    s.del_user("carol", "example.com")
    ddir = store.domain_dir("example.com")
    lines = (ddir / "vpasswd").read_bytes().splitlines()
    r = cdblib.Reader((ddir / "vpasswd.cdb").read_bytes())
    # every record, in vpasswd order, key = name, value = rest of the line
    assert list(r.iteritems()) == [tuple(x.split(b":", 1)) for x in lines]
    assert [k for k, _ in r.iteritems()] == [b"bob", b"dave", b"postmaster"]
    assert r.get(b"bob") == b"HASHB:1:0:Bob Smith:" + str(ddir / "bob").encode() + b":NOQUOTA"
    assert r.get(b"carol") is None
    assert s.get_user("bob", "example.com").gecos == "Bob Smith"


def test_users_cdb_read_by_pure_cdb(store):
    s = store.store
    s.add_domain("admin.test", "PmPass1", uid=89, gid=89)
    s.add_domain("example.test", "PmPass1", uid=89, gid=89)
    s.add_alias_domain("example.test", "alias.test")
    r = cdblib.Reader((store.qmail / "users" / "cdb").read_bytes())
    d = str(store.vpopmail / "domains").encode()
    assert list(r.iteritems()) == [
        (b"!admin.test-", b"admin.test\x0089\x0089\x00" + d + b"/admin.test\x00-\x00"),
        (b"!alias.test-", b"example.test\x0089\x0089\x00" + d + b"/example.test\x00-\x00"),
        (b"!example.test-", b"example.test\x0089\x0089\x00" + d + b"/example.test\x00-\x00"),
        (b"", b"-"),
    ]
    # and the same bytes as the pure compiler of users/assign
    assert (store.qmail / "users" / "cdb").read_bytes() == qmail.users_cdb((store.qmail / "users" / "assign").read_bytes())


def test_pristine_users_cdb_holds_only_the_empty_key():
    data = qmail.users_cdb(b".\n")
    assert list(cdblib.Reader(data).iteritems()) == [(b"", b"")]


def test_users_cdb_equals_lines_and_stops_at_dot():
    # qmail-newu: key '!' + lower(local) (+ NUL for '=' lines); value = the text after the first ':'
    # up to the 6th colon after it, those colons but the 6th turned into NULs; wildchars = last chars
    assign = (b"+Ex.com-:ex.com:1:2:/d:-::\n"
              b"=Bob@ex.com:ex.com:1:2:/d/bob:-:bob:\n"
              b"+pre.com-:pre.com:1:2:/p:-:prefix-:\n"
              b"+Wild.com+:wild.com:1:2:/w:-::\n"
              b".\n+after.com-:a:1:2:/a:-::\n")
    r = cdblib.Reader(qmail.users_cdb(assign))
    assert list(r.iteritems()) == [
        (b"!ex.com-", b"ex.com\x001\x002\x00/d\x00-\x00"),
        (b"!bob@ex.com\x00", b"ex.com\x001\x002\x00/d/bob\x00-\x00bob"),
        (b"!pre.com-", b"pre.com\x001\x002\x00/p\x00-\x00prefix-"),
        (b"!wild.com+", b"wild.com\x001\x002\x00/w\x00-\x00"),
        (b"", b"-+"),
    ]
