"""vpasswd lines, ordering and rewrites (spec/store.md §3) and password hashes (§12.4)."""

from __future__ import annotations

import re

import cdblib
import pytest

from vcli.errors import BadCharacter, UserExists, UserNotFound
from vcli.store import passwords
from vcli.store.store import NewUser, UserChanges
from vcli.store.vpasswd import VUser, parse_line

SHA512_RE = re.compile(r"\$6\$[./0-9A-Za-z]{8}\$[./0-9A-Za-z]{86}\Z")


def vpasswd(store, domain="example.com") -> bytes:
    return (store.domain_dir(domain) / "vpasswd").read_bytes()


def names_in(store, domain="example.com") -> list[bytes]:
    return [line.split(b":", 1)[0] for line in vpasswd(store, domain).splitlines()]


def cdb_matches_vpasswd(store, domain="example.com") -> None:
    ddir = store.domain_dir(domain)
    recs = list(cdblib.Reader((ddir / "vpasswd.cdb").read_bytes()).iteritems())
    assert recs == [tuple(x.split(b":", 1)) for x in (ddir / "vpasswd").read_bytes().splitlines()]


@pytest.fixture()
def dom(store):
    store.store.add_domain("example.com", "PmPass1")
    return store


def test_line_format_after_add_domain_and_add_user(dom):
    s = dom.store
    s.add_user("example.com", NewUser("bob", "BobPass1"))
    ddir = str(dom.domain_dir("example.com"))
    lines = vpasswd(dom).decode().split("\n")
    assert lines[-1] == ""  # newline-terminated
    bob, pm = lines[:-1]
    f = bob.split(":")
    assert len(f) == 7 and bob.count(":") == 6
    assert f[0] == "bob" and SHA512_RE.match(f[1]) and len(f[1]) == 98
    assert f[2:] == ["1", "0", "bob", f"{ddir}/bob", "NOQUOTA"]
    assert bob.startswith("bob:$6$") and ":1:0:bob:" in bob
    f = pm.split(":")
    assert len(f) == 7
    assert f[0] == "postmaster" and SHA512_RE.match(f[1])
    assert f[2:] == ["1", "0", "Postmaster", f"{ddir}/postmaster", "NOQUOTA"]
    assert passwords.verify_password("BobPass1", s.get_user("bob", "example.com").passwd)
    assert passwords.verify_password("PmPass1", s.get_user("postmaster", "example.com").passwd)
    assert not passwords.verify_password("bobpass1", s.get_user("bob", "example.com").passwd)
    cdb_matches_vpasswd(dom)


def test_explicit_gecos_hash_and_apop(dom):
    s = dom.store
    s.add_user("example.com", NewUser("carol", hashed="$1$abcdefgh$47MlUtwqzOEjMec2Kb6qJ1", gecos="Carol C", apop=True))
    s.add_user("example.com", NewUser("dave", hashed=""))
    ddir = str(dom.domain_dir("example.com"))
    lines = vpasswd(dom).decode().splitlines()
    assert lines[0] == f"carol:$1$abcdefgh$47MlUtwqzOEjMec2Kb6qJ1:2:0:Carol C:{ddir}/carol:NOQUOTA"
    assert lines[1] == f"dave::1:0:dave:{ddir}/dave:NOQUOTA"  # empty hash stays empty


def test_gecos_with_colon_refused(dom):
    with pytest.raises(BadCharacter):
        dom.store.add_user("example.com", NewUser("bob", "BobPass1", gecos="John:Smith"))
    dom.store.add_user("example.com", NewUser("bob", "BobPass1"))
    before = vpasswd(dom)
    with pytest.raises(BadCharacter):
        dom.store.mod_user("bob", "example.com", UserChanges(gecos="a:b"))
    assert vpasswd(dom) == before


def test_sorted_insertion_strcmp_order(dom):
    s = dom.store
    # one at a time, in an order that is not sorted
    for name in ["zed", "a_b", "ab", "a-b", "bobby", "a.b", "bob", "a0", "Zz9"]:
        s.add_user("example.com", NewUser(name, hashed="H"))
    got = names_in(dom)
    # byte order: '-' 45 < '.' 46 < '0' 48 < '_' 95 < 'a' 97; a name sorts before its extensions
    assert got == [b"a-b", b"a.b", b"a0", b"a_b", b"ab", b"bob", b"bobby", b"postmaster", b"zed", b"zz9"]
    assert got == sorted(got)
    cdb_matches_vpasswd(dom)


def test_bulk_add_gives_the_same_bytes_as_one_by_one(store):
    a = store.store
    a.add_domain("one.com", hashed="PMH")
    a.add_domain("two.com", hashed="PMH")
    batch = [NewUser(n, hashed="H" + n) for n in ["mike", "alice", "zed", "bob", "q1"]]
    for n in batch:
        a.add_user("one.com", n)
    a.add_users("two.com", batch)
    one = vpasswd(store, "one.com").replace(b"one.com", b"X")
    two = vpasswd(store, "two.com").replace(b"two.com", b"X")
    assert one == two
    assert (store.domain_dir("one.com") / ".dir-control").read_bytes() == (
        store.domain_dir("two.com") / ".dir-control").read_bytes()


def _line(name, d="/d", passwd="H", uid="1", gid="0", quota="NOQUOTA", extra=""):
    return f"{name}:{passwd}:{uid}:{gid}:{name}:{d}/{name}:{quota}{extra}\n".encode()


def test_insert_into_unsorted_file_is_linear_insert(dom):
    s = dom.store
    vp = dom.domain_dir("example.com") / "vpasswd"
    vp.write_bytes(_line("zed") + _line("alice") + _line("postmaster"))
    s.add_user("example.com", NewUser("mike", hashed="H"))
    # before the first line whose name is greater: zed
    assert names_in(dom) == [b"mike", b"zed", b"alice", b"postmaster"]
    s.add_user("example.com", NewUser("bob", hashed="H"))
    assert names_in(dom) == [b"bob", b"mike", b"zed", b"alice", b"postmaster"]
    s.add_user("example.com", NewUser("zz", hashed="H"))
    assert names_in(dom) == [b"bob", b"mike", b"zed", b"alice", b"postmaster", b"zz"]
    cdb_matches_vpasswd(dom)


def test_bulk_insert_into_unsorted_file_matches_one_by_one(dom):
    s = dom.store
    vp = dom.domain_dir("example.com") / "vpasswd"
    vp.write_bytes(_line("zed") + _line("alice") + _line("postmaster"))
    s.add_users("example.com", [NewUser(n, hashed="H") for n in ["mike", "bob", "zz", "aaa"]])
    assert names_in(dom) == [b"aaa", b"bob", b"mike", b"zed", b"alice", b"postmaster", b"zz"]


def test_modify_replaces_only_that_line(dom):
    s = dom.store
    vp = dom.domain_dir("example.com") / "vpasswd"
    s.add_user("example.com", NewUser("bob", hashed="HB"))
    # hand-written neighbours with odd but valid content: 8 fields, uid 2, flags, quota
    amy = _line("amy", uid="2", gid="12345", quota="1000C", extra=":clear:with:colons")
    zoe = b"zoe:$6$x$y:1:0:Zoe  Q:/elsewhere/zoe:\n"
    vp.write_bytes(amy + vp.read_bytes() + zoe)
    lines = vp.read_bytes().splitlines(keepends=True)
    s.mod_user("bob", "example.com", UserChanges(gecos="Bob Smith", set_flags=4096, quota="50M"))
    new = vp.read_bytes().splitlines(keepends=True)
    assert len(new) == len(lines) == 4
    ddir = dom.domain_dir("example.com")
    assert new[1] == f"bob:HB:1:4096:Bob Smith:{ddir}/bob:52428800S\n".encode()
    assert [new[0], new[2], new[3]] == [lines[0], lines[2], lines[3]]
    cdb_matches_vpasswd(dom)
    # a default-build rewrite drops an existing 8th field, keeps uid 2 and unknown flag bits
    s.mod_user("amy", "example.com", UserChanges(set_flags=2))
    assert vp.read_bytes().splitlines(keepends=True)[0] == b"amy:H:2:12347:amy:/d/amy:1000C\n"
    assert vp.read_bytes().splitlines(keepends=True)[1:] == new[1:]


def test_modify_flags_clear_and_unset(dom):
    s = dom.store
    s.add_user("example.com", NewUser("bob", hashed="HB"))
    assert s.mod_user("bob", "example.com", UserChanges(set_flags=2 | 8 | 2048 | 1)).gid == 2059
    assert s.mod_user("bob", "example.com", UserChanges(unset_flags=8)).gid == 2051
    assert s.mod_user("bob", "example.com", UserChanges(clear_flags=True, set_flags=2)).gid == 2
    assert parse_line(vpasswd(dom).splitlines(keepends=True)[0]).gid == 2


def test_delete_drops_the_line_only(dom):
    s = dom.store
    s.add_users("example.com", [NewUser(n, hashed="H" + n) for n in ["alice", "bob", "carol"]])
    before = vpasswd(dom).splitlines(keepends=True)
    old = s.del_user("bob", "example.com")
    assert old.name == "bob" and old.passwd == "Hbob"
    after = vpasswd(dom).splitlines(keepends=True)
    assert after == [before[0], before[2], before[3]]
    assert not (dom.domain_dir("example.com") / "bob").exists()
    r = cdblib.Reader((dom.domain_dir("example.com") / "vpasswd.cdb").read_bytes())
    assert r.get(b"bob") is None and r.get(b"alice") is not None
    with pytest.raises(UserNotFound):
        s.get_user("bob", "example.com")
    with pytest.raises(UserNotFound):
        s.del_user("bob", "example.com")


def test_existing_user_refused(dom):
    dom.store.add_user("example.com", NewUser("bob", hashed="H"))
    with pytest.raises(UserExists):
        dom.store.add_user("example.com", NewUser("BOB", hashed="H"))


def test_clear_password_build_writes_eight_fields(store):
    s = store.make(clear_passwords=True)
    s.add_domain("example.com", "PmPass1")
    s.add_user("example.com", NewUser("bob", "BobPass1"))
    s.add_user("example.com", NewUser("carol", hashed="$6$x$y"))
    ddir = str(store.domain_dir("example.com"))
    lines = vpasswd(store).decode().splitlines()
    assert [x.count(":") for x in lines] == [7, 7, 7]
    assert re.fullmatch(rf"bob:\$6\$[^:]{{95}}:1:0:bob:{ddir}/bob:NOQUOTA:BobPass1", lines[0])
    assert lines[1] == f"carol:$6$x$y:1:0:carol:{ddir}/carol:NOQUOTA:"  # -e: clear field empty
    assert re.fullmatch(rf"postmaster:\$6\$[^:]{{95}}:1:0:Postmaster:{ddir}/postmaster:NOQUOTA:PmPass1", lines[2])
    assert s.get_user("bob", "example.com").clear == "BobPass1"
    # a rewrite keeps the clear field; a new password replaces it
    s.mod_user("bob", "example.com", UserChanges(gecos="Bob"))
    assert vpasswd(store).decode().splitlines()[0].endswith(":Bob:" + ddir + "/bob:NOQUOTA:BobPass1")
    s.mod_user("bob", "example.com", UserChanges(password="NewPass2"))
    u = s.get_user("bob", "example.com")
    assert u.clear == "NewPass2" and passwords.verify_password("NewPass2", u.passwd)
    # the default build reading the same domain drops the 8th field on its next rewrite
    store.store.mod_user("bob", "example.com", UserChanges(gecos="Bob2"))
    assert vpasswd(store).decode().splitlines()[0].count(":") == 6


def test_vuser_to_line():
    u = VUser("bob", "H", "1", 4096, "Bob", "/d/bob", "NOQUOTA", "c")
    assert u.to_line(False) == b"bob:H:1:4096:Bob:/d/bob:NOQUOTA\n"
    assert u.to_line(True) == b"bob:H:1:4096:Bob:/d/bob:NOQUOTA:c\n"
    assert parse_line(b"bob:H:1:4096:Bob:/d/bob:NOQUOTA:c\n") == u
    assert parse_line(b"bob:H:2:7x:Bob:/d/bob:\n").gid == 7  # %d / atoi semantics
    with pytest.raises(ValueError):
        parse_line(b"bob:H:1:0:Bob:/d/bob\n")


# --- hashes ----------------------------------------------------------------------------------

# Vectors from `openssl passwd -1/-5/-6 -salt abcdefgh 'Secret pw1'`, Drepper's SHA-crypt spec and
# traditional DES crypt.
VECTORS = [
    ("Secret pw1", "$1$abcdefgh$47MlUtwqzOEjMec2Kb6qJ1"),
    ("Secret pw1", "$5$abcdefgh$P.qa/f/35aSJ06zUf6BX3lOyqpWH4Uv0Zkc7JFUBoT/"),
    ("Secret pw1", "$6$abcdefgh$VkXVXXbKRG02BN..UjgbL5.hdtViGNcFU.Zysr0AIedyisZcFgTJ.NWECPS1n.04YgHARKDqgm2TJ1MztdpD20"),
    ("Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("password", "abJnggxhB/yWI"),
]


@pytest.mark.parametrize("clear,stored", VECTORS)
def test_verify_known_hashes(clear, stored):
    assert passwords.verify_password(clear, stored)
    assert passwords.verify_password(clear, "{CRYPT}" + stored)
    assert not passwords.verify_password("x" + clear, stored)  # DES reads only 8 chars


def test_empty_stored_hash_never_matches():
    assert not passwords.verify_password("", "")
    assert not passwords.verify_password("x", "")
    assert not passwords.verify_password("", "{CRYPT}")


@pytest.mark.parametrize("scheme,pattern", [
    ("sha512", r"\$6\$[./0-9A-Za-z]{8}\$[./0-9A-Za-z]{86}"),
    ("md5", r"\$1\$[./0-9A-Za-z]{8}\$[./0-9A-Za-z]{22}"),
    ("des", r"[./0-9A-Za-z]{13}"),
])
def test_hash_schemes(scheme, pattern):
    h = passwords.hash_password("Secret pw1", scheme)
    assert re.fullmatch(pattern, h)
    assert len(h) == {"sha512": 98, "md5": 34, "des": 13}[scheme]
    assert passwords.verify_password("Secret pw1", h)
    assert h != passwords.hash_password("Secret pw1", scheme) or scheme == "des"


def test_site_hash_setting_used_for_new_users(store):
    s = store.make(hash="md5")
    s.add_domain("example.com", "PmPass1")
    assert s.get_user("postmaster", "example.com").passwd.startswith("$1$")
    assert len(s.get_user("postmaster", "example.com").passwd) == 34
