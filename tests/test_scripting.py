"""The scripting promises: --dry-run changes no byte, --quiet is silent, JSON keeps its shape."""

from __future__ import annotations

import json

import pytest
from storeenv import make_env, run, snapshot


@pytest.fixture()
def store(tmp_path):
    env = make_env(tmp_path)
    assert run(env, "vadddomain", "example.test", "Pm-pass1").returncode == 0
    assert run(env, "vadduser", "alice@example.test", "Alice-pw1").returncode == 0
    return env, tmp_path


@pytest.mark.parametrize("argv", [
    ["vcli", "vadduser", "--dry-run", "bob@example.test", "Bob-pass1"],
    ["vcli", "vdeluser", "--dry-run", "alice@example.test"],
    ["vcli", "vmoduser", "--dry-run", "-p", "-a", "-q", "5M", "-c", "Alice A", "alice@example.test"],
    ["vcli", "vpasswd", "--dry-run", "alice@example.test", "New-pass1"],
    ["vcli", "vsetuserquota", "--dry-run", "example.test", "10M"],
    ["vcli", "vadddomain", "--dry-run", "other.test", "Pm-pass2"],
    ["vcli", "vdeldomain", "--dry-run", "example.test"],
    ["vcli", "vaddaliasdomain", "--dry-run", "example.test", "alias.test"],
    ["vcli", "valias", "--dry-run", "-i", "bob@elsewhere.test", "info@example.test"],
])
def test_dry_run_changes_no_byte_and_says_what_it_would_do(store, argv):
    env, root = store
    before = snapshot(root)
    r = run(env, *argv)
    assert r.returncode == 0, r.stderr
    assert snapshot(root) == before
    assert r.stdout.startswith("would ")
    assert "nothing would change" not in r.stdout


def test_dry_run_shows_the_vpasswd_line_it_would_add(store):
    env, root = store
    r = run(env, "vcli", "vadduser", "--dry-run", "bob@example.test", "Bob-pass1")
    vpasswd = root / "vpopmail" / "domains" / "example.test" / "vpasswd"
    lines = r.stdout.splitlines()
    assert f"would rewrite {vpasswd}:" in lines
    added = [x for x in lines if x.startswith("  + bob:$6$")]
    assert len(added) == 1 and added[0].endswith(f":1:0:bob:{vpasswd.parent}/bob:NOQUOTA")
    assert f"would create mailbox {vpasswd.parent}/bob (Maildir/{{cur,new,tmp}}, lastauth)" in lines


def test_dry_run_still_reports_errors(store):
    env, root = store
    before = snapshot(root)
    r = run(env, "vcli", "vadduser", "--dry-run", "alice@example.test", "Other-pw1")
    assert r.returncode == 255
    assert r.stderr == "Error: User already exists\n"
    assert snapshot(root) == before


def test_quiet_success_prints_nothing(store):
    env, _ = store
    for argv in (["vcli", "--quiet", "vadduser", "bob@example.test", "Bob-pass1"],
                 ["vcli", "-q", "vmoduser", "-p", "bob@example.test"],
                 ["vcli", "-q", "vdeluser", "bob@example.test"]):
        r = run(env, *argv)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), argv


def test_json_user_shape(store):
    env, _ = store
    r = run(env, "vcli", "vuserinfo", "alice@example.test", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"address", "name", "domain", "passwd", "clear", "uid", "gid", "flags", "flag_names",
                        "domain_flags", "gecos", "dir", "quota", "created", "last_auth", "last_auth_ip", "usage"}
    assert doc["address"] == "alice@example.test" and doc["gid"] == 0 and doc["quota"] == "NOQUOTA"
    assert set(doc["usage"]) == {"bytes", "messages", "percent"}
    r = run(env, "vcli", "vuserinfo", "-D", "example.test", "-o", "json")
    assert [u["name"] for u in json.loads(r.stdout)] == ["alice", "postmaster"]


def test_json_domain_shape(store):
    env, _ = store
    assert run(env, "vaddaliasdomain", "example.test", "alias.test").returncode == 0
    doc = json.loads(run(env, "vcli", "vdominfo", "example.test", "-o", "json").stdout)
    assert doc == {"domain": "example.test", "real": "example.test", "alias_of": None, "uid": doc["uid"],
                   "gid": doc["gid"], "dir": doc["dir"], "users": 2, "aliases": ["alias.test"]}
    rows = json.loads(run(env, "vcli", "vdominfo", "-o", "json").stdout)
    assert [(r["domain"], r["alias_of"]) for r in rows] == [("alias.test", "example.test"), ("example.test", None)]


def test_exist_ok_and_missing_ok_make_cron_lines_idempotent(store):
    env, root = store
    assert run(env, "vcli", "vadduser", "--exist-ok", "alice@example.test", "Alice-pw1").returncode == 0
    assert run(env, "vcli", "vdeluser", "--missing-ok", "nobody@example.test").returncode == 0
    assert run(env, "vcli", "vadddomain", "--exist-ok", "example.test", "Pm-pass1").returncode == 0
    assert run(env, "vcli", "vdeldomain", "--missing-ok", "gone.test").returncode == 0


def test_config_show_masks_passwords(store, tmp_path):
    env, _ = store
    conf = tmp_path / "config.toml"
    conf.write_text('hash = "md5"\n[profiles.mx]\nremote = "mx.example:89"\npassword = "Sekret-1"\n')
    conf.chmod(0o600)
    r = run(dict(env, VCLI_CONFIG=str(conf)), "vcli", "config", "show", "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["hash"] == "md5" and doc["config_file"] == str(conf)
    assert doc["profiles"] == {"mx": {"remote": "mx.example:89", "password": "********"}}
    assert "Sekret-1" not in r.stdout
    r = run(dict(env, VCLI_CONFIG=str(conf)), "vcli", "config", "path")
    assert r.stdout == f"{conf}\n"
