"""The vpopmaild Session in-process: the limits of multi-line input and what a dropped
connection leaves behind (the wire tests in test_daemon.py run a real process)."""

from __future__ import annotations

import os

import pytest
from daemon_helpers import build_store, env_path

from vcli.config import load_settings
from vcli.daemon import wire
from vcli.daemon.wire import Session
from vcli.store.store import Store


@pytest.fixture()
def env(tmp_path):
    return build_store(tmp_path)


def _session(env, who: bytes = b"slogin sysadmin@admin.test SysPass1\r\n") -> Session:
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    s = Session(st, peer="192.0.2.9")
    assert s.greeting() == b"+OK \r\n"
    assert s.feed(who) == b"+OK \r\n"
    return s


def test_unknown_mod_user_target_drains_at_most_the_cap(env, monkeypatch):
    monkeypatch.setattr(wire, "MAX_DRAIN_LINES", 50)
    s = _session(env)
    assert s.feed(b"mod_user nobody@example.test\r\n") == b""
    for _ in range(50):
        assert s.feed(b"comment x\r\n") == b""
    assert s.feed(b"comment x\r\n") == b"-ERR 12.505 User does not exist\r\n"
    assert s.feed(b"domain_count\r\n") == b"+OK+\r\ncount 3\r\n.\r\n"


def test_unknown_mod_user_target_ends_at_a_bare_dot(env):
    s = _session(env)
    for line in (b"mod_user nobody@example.test\r\n", b"comment x\r\n", b". \r\n", b"..\n", b"domain_count\r\n"):
        assert s.feed(line) == b""
    assert s.feed(b".\n") == b"-ERR 12.505 User does not exist\r\n"


def test_closing_in_the_middle_of_write_file_releases_the_file(env):
    s = _session(env)
    assert s.feed(b"write_file example.test/half\r\n") == b""
    assert s.feed(b"data\r\n") == b""
    f = s._open_file
    s.close()
    assert f.closed and s.feed(b".\r\n") == b""
    assert open(env_path(env, "domains", "example.test", "half"), "rb").read() == b"data\r\n"


def test_closing_in_the_middle_of_mod_user_applies_nothing(env):
    s = _session(env)
    before = open(env_path(env, "domains", "example.test", "vpasswd"), "rb").read()
    assert s.feed(b"mod_user alice@example.test\r\n") == b"+OK \r\n"
    assert s.feed(b"comment changed\r\n") == b""
    s.close()
    assert s.feed(b".\r\n") == b""
    assert open(env_path(env, "domains", "example.test", "vpasswd"), "rb").read() == before


def test_a_store_error_costs_one_reply_not_the_session(env):
    s = _session(env)
    vpasswd = env_path(env, "domains", "example.test", "vpasswd")
    with open(vpasswd, "ab") as f:
        f.write(b"broken line without colons\n")
    assert s.feed(b"add_user zed@example.test Zed-pass-1\r\n").startswith(b"-ERR 0.")
    assert s.feed(b"domain_count\r\n") == b"+OK+\r\ncount 3\r\n.\r\n"


def test_no_store_no_greeting(tmp_path):
    st = Store(load_settings({"vpopmail_dir": str(tmp_path / "missing"), "qmail_dir": str(tmp_path)}))
    s = Session(st)
    assert s.greeting() == b"-ERR 1.101 Can't open authentication database\r\n"
    assert s.closed


def test_set_limits_values_are_c_atoi(env):
    s = _session(env)
    assert s.feed(b"set_limits other.test\r\n") == b"+OK \r\n"
    for line in (b"max_aliases=:12abc\r\n", b"disk_quota 5000000000\r\n", b"max_forwards  -3\r\n",
                 b"max_popaccounts\r\n", b"\r\n"):
        s.feed(line)
    assert s.feed(b".\r\n") == b"+OK \r\n"
    reply = s.feed(b"get_limits other.test\r\n").decode()
    assert "max_aliases 12\r\n" in reply and "max_forwards -3\r\n" in reply
    assert f"disk_quota {5000000000 - 2**32}\r\n" in reply  # atoi keeps 32 bits, as in the C daemon
    assert "max_popaccounts -1\r\n" in reply
    os.remove(env_path(env, "domains", "other.test", ".qmailadmin-limits"))


def test_domain_admin_with_override_may_set_quota_plain_user_with_override_may_not(env):
    from vcli import flags as F
    from vcli.store.store import UserChanges

    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    st.mod_user("dadmin", "example.test", UserChanges(set_flags=F.V_OVERRIDE))
    st.mod_user("alice", "example.test", UserChanges(set_flags=F.V_OVERRIDE))
    qa = _session(env, b"slogin dadmin@example.test Dadmin-pw1\r\n")
    for line in (b"mod_user alice@example.test\r\n", b"quota 1M\r\n", b"no_pop 1\r\n"):
        qa.feed(line)
    assert qa.feed(b".\r\n") == b"+OK \r\n"
    alice = st.get_user("alice", "example.test")
    assert (alice.quota, alice.gid) == ("1048576S", F.V_OVERRIDE | F.BY_FIELD["no_pop"].bit)
    user = _session(env, b"slogin alice@example.test pw with spaces\r\n")
    for line in (b"mod_user alice@example.test\r\n", b"quota 2M\r\n", b"no_pop 0\r\n"):
        user.feed(line)
    assert user.feed(b".\r\n") == b"+OK \r\n"
    assert st.get_user("alice", "example.test").quota == "1048576S"
    assert st.get_user("alice", "example.test").gid & F.BY_FIELD["no_pop"].bit


@pytest.mark.parametrize("command", [
    b"rm_file alice@example.test/Maildir/sub/secret\r\n",
    b"read_file alice@example.test/Maildir/sub/secret\r\n",
    b"rm_dir alice@example.test/Maildir/sub/inner\r\n",
    b"stat_file alice@example.test/Maildir/sub/secret\r\n",
    b"mk_dir alice@example.test/Maildir/sub/planted\r\n",
    b"list_dir alice@example.test/Maildir/sub/inner\r\n",
])
def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(env, tmp_path, monkeypatch, command):
    """The race a shell user on the store could run: the path is approved, then a directory on it
    becomes a symlink to somewhere else before the operation.  The component-wise O_NOFOLLOW walk
    refuses it."""
    s = _session(env)
    home = s.store.get_user("alice", "example.test").dir
    sub = os.path.join(home, "Maildir", "sub")
    os.makedirs(os.path.join(sub, "inner"))
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "secret").write_text("keep me")
    (outside / "inner" / "keep").write_text("keep me too")
    approve = Session._path

    def racing_path(self, raw, allow_base=False):
        result = approve(self, raw, allow_base)
        if os.path.isdir(sub) and not os.path.islink(sub):
            os.rename(sub, sub + ".moved")
            os.symlink(outside, sub)
        return result

    monkeypatch.setattr(Session, "_path", racing_path)
    reply = s.feed(command)
    assert reply.startswith(b"-ERR 0."), reply
    assert b"keep me" not in reply
    assert (outside / "secret").read_text() == "keep me"
    assert (outside / "inner" / "keep").read_text() == "keep me too"
    assert sorted(os.listdir(outside)) == ["inner", "secret"]
