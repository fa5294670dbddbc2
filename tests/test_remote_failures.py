"""The remote backend's failure paths: clear one-line errors and the documented exit codes."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from daemon_helpers import Daemon, build_store, free_port
from storeenv import run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    env = build_store(tmp_path_factory.mktemp("store"))
    with Daemon(env) as d:
        yield env, d.port


def remote(env, port, login="sysadmin@admin.test", password="SysPass1"):
    return dict(env, VCLI_REMOTE=f"127.0.0.1:{port}", VCLI_LOGIN=login, VCLI_PASSWORD=password)


def test_server_down(served):
    env, _ = served
    port = free_port()
    r = run(remote(env, port), "vuserinfo", "alice@example.test")
    assert (r.returncode, r.stdout) == (69, "")
    assert r.stderr == f"Error: cannot connect to 127.0.0.1:{port}: Connection refused\n"


def test_wrong_password(served):
    env, port = served
    r = run(remote(env, port, password="wrong"), "vuserinfo", "alice@example.test")
    assert (r.returncode, r.stdout) == (77, "")
    assert r.stderr == "Error: login as sysadmin@admin.test failed: Invalid Login\n"


def test_not_authorised(served):
    env, port = served
    r = run(remote(env, port, login="alice@example.test", password="pw with spaces"),
            "vadduser", "x@other.test", "Xx-pass1")
    assert r.returncode == 77
    assert r.stderr.startswith("Error: ") and "not" in r.stderr.lower() and r.stderr.count("\n") == 1


def test_domain_admin_works_on_its_own_domain(served):
    env, port = served
    e = remote(env, port, login="dadmin@example.test", password="Dadmin-pw1")
    r = run(e, "vuserinfo", "-n", "-c", "alice@example.test")
    assert (r.returncode, r.stdout, r.stderr) == (0, "alice\nAlice A\n", "")
    r = run(e, "vuserinfo", "dan@other.test")
    assert r.returncode == 77


def test_password_never_needed_on_argv(served, tmp_path):
    env, port = served
    pw = tmp_path / "pw"
    pw.write_text("SysPass1\n")
    e = dict(env)
    r = run(e, "vcli", "--remote", f"127.0.0.1:{port}", "--login", "sysadmin@admin.test",
            "--remote-password-file", str(pw), "vuserinfo", "-n", "alice@example.test")
    assert (r.returncode, r.stdout) == (0, "alice\n"), r.stderr


def test_profile_with_password_must_be_private(served, tmp_path):
    env, port = served
    conf = tmp_path / "config.toml"
    conf.write_text(f'[profiles.mx]\nremote = "127.0.0.1:{port}"\nlogin = "sysadmin@admin.test"\n'
                    'password = "SysPass1"\n')
    os.chmod(conf, 0o644)
    e = dict(env, VCLI_CONFIG=str(conf))
    r = run(e, "vcli", "--profile", "mx", "vuserinfo", "-n", "alice@example.test")
    assert r.returncode == 78
    assert "readable by others" in r.stderr and "SysPass1" not in r.stderr
    os.chmod(conf, 0o600)
    r = run(e, "vcli", "--profile", "mx", "vuserinfo", "-n", "alice@example.test")
    assert (r.returncode, r.stdout, r.stderr) == (0, "alice\n", "")


def test_connection_dropped_mid_listing(served):
    """A server that dies in the middle of list_users: one clear error, exit 69."""
    env, _ = served
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]

    def serve():
        for _ in range(2):  # the client retries an idempotent read once
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            with conn:
                f = conn.makefile("rb")
                conn.sendall(b"+OK \r\n")
                f.readline()
                conn.sendall(b"+OK+\r\nvpopmail_dir /x\r\ndomain_dir /x/domains/example.test\r\nuid 1\r\n"
                             b"gid 1\r\nname sysadmin\r\ngidflags 65536\r\n.\r\n")
                while True:
                    line = f.readline()
                    if not line:
                        break
                    if line.startswith(b"dom_info"):
                        conn.sendall(b"+OK+\r\ndomain example.test\r\npath /x/domains/example.test\r\n"
                                     b"uid 1\r\ngid 1\r\n.\r\n")
                    elif line.startswith(b"list_users"):
                        conn.sendall(b"+OK+\r\nname alice\r\ncomment Al")
                        break
                f.close()  # the makefile() reference would keep the socket open

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r = run(remote(env, port), "vuserinfo", "-D", "example.test")
    lsock.close()
    assert (r.returncode, r.stdout) == (69, "")
    assert r.stderr == f"Error: 127.0.0.1:{port} closed the connection\n"
