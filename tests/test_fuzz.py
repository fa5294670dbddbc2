"""Property tests: hostile input never crashes the codecs or the protocol session, and never leaves
a store that `vcli check` rejects."""

from __future__ import annotations

import pytest
from daemon_helpers import build_store
from fuzzscale import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcli.config import load_settings
from vcli.daemon.wire import Session
from vcli.errors import VcliError
from vcli.store import names, quota
from vcli.store.check import check
from vcli.store.store import Store
from vcli.store.vpasswd import VUser, build_cdb, parse_line

field = st.text(alphabet=st.characters(blacklist_characters=":\n\r\0", blacklist_categories=("Cs",)), max_size=30)


@given(name=st.from_regex(r"[a-z0-9._-]{2,20}", fullmatch=True), passwd=field, gid=st.integers(0, 2**19 - 1),
       gecos=field, home=field, q=field, clear=st.one_of(st.none(), field))
def test_vpasswd_line_round_trip(name, passwd, gid, gecos, home, q, clear):
    u = VUser(name, passwd, "1", gid, gecos, home, q, clear)
    line = u.to_line(clear_passwords=clear is not None)
    back = parse_line(line)
    assert (back.name, back.passwd, back.gid, back.gecos, back.dir, back.quota) == (name, passwd, gid, gecos, home, q)
    assert back.clear == (clear if clear is not None else None)
    assert build_cdb([line])  # indexes without error


@given(st.binary(max_size=300))
def test_vpasswd_parser_never_crashes(data):
    try:
        parse_line(data)
    except ValueError:
        pass


@given(st.text(max_size=200))
def test_address_parser_refuses_or_gives_safe_names(text):
    try:
        user, domain = names.parse_address(text, "default.test")
    except VcliError:
        return
    assert "/" not in user and ".." not in user and not user.startswith(("-", "."))
    assert "/" not in domain and ".." not in domain and "\0" not in user + domain
    assert user == user.lower() and domain == domain.lower()


@given(st.text(max_size=40))
def test_quota_normaliser_total(text):
    try:
        out = quota.normalize(text)
    except VcliError:
        return
    assert out == "NOQUOTA" or out == "" or out.endswith(("S", "C"))
    assert len(out) <= 20


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    env = build_store(tmp_path_factory.mktemp("fuzz"))
    return Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))


COMMANDS = ["user_info", "add_user", "del_user", "mod_user", "list_users", "user_count", "add_alias",
            "remove_alias", "delete_alias", "list_alias", "get_limits", "set_limits", "dom_info", "list_domains",
            "find_domain", "get_domain_size", "get_lastauth", "get_user_size", "list_dir", "read_file",
            "stat_file", "mk_dir", "rm_file", "help", "frobnicate", "comment", "no_pop", "."]
WORDS = ["alice@example.test", "x@example.test", "dan@other.test", "example.test", "other.test", "../..",
         "/etc/passwd", "alice@example.test/Maildir", "%2e", "1", "0", "-1", "", "a" * 300, "\x00", "é@x.test"]


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.binary(max_size=60),
    st.tuples(st.sampled_from(COMMANDS), st.lists(st.sampled_from(WORDS), max_size=3)).map(
        lambda t: " ".join([t[0], *t[1]]).encode("utf-8", "surrogateescape") + b"\r\n"),
), max_size=25))
def test_session_survives_any_input_and_the_store_stays_consistent(fuzz_store, lines):
    s = Session(fuzz_store, peer="fuzz")
    s.feed(b"slogin sysadmin@admin.test SysPass1\r\n")
    for raw in lines:
        reply = s.feed(raw)
        assert isinstance(reply, bytes)
        for line in reply.split(b"\r\n"):
            assert not line.startswith(b"Traceback")
        if s.closed:
            break
    assert [str(p) for p in check(fuzz_store)] == []
