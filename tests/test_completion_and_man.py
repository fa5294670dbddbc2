"""Completions and man pages: the real bash completion function, drift of the checked-in files,
groff rendering without a warning, and help text on every command and option."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from storeenv import BASH_COMPLETE, BIN, ROOT, make_env, run

from vcli.cli import gendocs


@pytest.fixture(scope="module")
def store_env(tmp_path_factory):
    env = make_env(tmp_path_factory.mktemp("comp"))
    for argv in (["vadddomain", "example.test", "Pm-pass1"], ["vadddomain", "example.org", "Pm-pass1"],
                 ["vadddomain", "other.test", "Pm-pass1"], ["vadduser", "alice@example.test", "Alice-pw1"],
                 ["vadduser", "alan@example.test", "Alan-pw1"], ["vadduser", "bob@example.test", "Bob-pass1"]):
        assert run(env, *argv).returncode == 0
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    return env


def complete(env, line: str) -> list[str]:
    bash = shutil.which("bash")
    assert bash, "bash is required for the completion tests"
    r = subprocess.run([bash, "-c", BASH_COMPLETE, "_", os.path.join(ROOT, "completions", "vcli.bash"), line],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [x for x in r.stdout.split("\n") if x]


def test_commands(store_env):
    assert complete(store_env, "vcli vad") == ["vadduser", "vadddomain", "vaddaliasdomain"]
    assert complete(store_env, "vcli completion ") == ["show", "install"]


def test_options(store_env):
    assert complete(store_env, "vcli vmoduser --no-p") == ["--no-password-change", "--no-pop"]
    assert "--dry-run" in complete(store_env, "vcli vadduser --d")


def test_flag_letters_of_the_classic_name(store_env):
    got = complete(store_env, "vmoduser -")
    assert {"-p", "-S", "-E", "-a", "-x", "-q", "-0", "-3"} <= set(got)
    assert complete(store_env, "vuserinfo -") == ["-a", "-n", "-p", "-u", "-g", "-c", "-d", "-q", "-Q", "-v", "-l",
                                                  "-D", "-C"]


def test_domains(store_env):
    assert complete(store_env, "vdominfo example.") == ["example.org", "example.test"]
    assert complete(store_env, "vcli vdeldomain oth") == ["other.test"]
    assert complete(store_env, "vmoduser ex") == ["example.org", "example.test"]  # a domain target


def test_users_after_the_at(store_env):
    assert complete(store_env, "vuserinfo alice@ex") == ["alice@example.org", "alice@example.test"]
    assert complete(store_env, "vuserinfo al@example.test") == ["alan@example.test", "alice@example.test"]
    assert complete(store_env, "vcli vpasswd b@example.test") == ["bob@example.test"]


def test_completion_store_follows_the_vpopmail_dir_option(store_env, tmp_path):
    env = dict(store_env, VPOPMAIL_DIR=str(tmp_path / "nowhere"))
    line = f"vcli --vpopmail-dir {store_env['VPOPMAIL_DIR']} --qmail-dir {store_env['QMAIL_DIR']} vdominfo oth"
    assert complete(env, line) == ["other.test"]


def test_completion_install_without_a_shell_name(store_env, tmp_path):
    env = {k: v for k, v in store_env.items() if k != "SHELL"}
    r = run(env, "vcli", "completion", "install", "--dir", str(tmp_path))
    assert (r.returncode, r.stderr) == (64, "Error: cannot tell the shell ('$SHELL unset'): use --shell bash|zsh|fish\n")
    r = run(env, "vcli", "completion", "install", "--shell", "bash", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "vcli").read_text() == gendocs.bash()
    assert (tmp_path / "vadduser").read_text() == f"source {tmp_path / 'vcli'}\n"


def test_checked_in_files_match_the_generator():
    stale = [rel for rel, text in gendocs.generated().items()
             if not os.path.exists(os.path.join(ROOT, rel)) or open(os.path.join(ROOT, rel)).read() != text]
    assert stale == [], "run: python -m vcli.cli.gendocs"


@pytest.mark.parametrize("page", sorted(f for f in os.listdir(os.path.join(ROOT, "man"))))
def test_man_page_renders_without_a_warning(page):
    groff = shutil.which("groff")
    assert groff, "groff is required (Debian groff-base; .ci/run installs it)"
    r = subprocess.run([groff, "-man", "-ww", "-z", os.path.join(ROOT, "man", page)], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (0, "")


def test_every_command_and_option_has_help():
    missing = []
    for cmd in gendocs.app_model():
        if cmd["name"] and not cmd["help"]:
            missing.append(cmd["name"])
        missing += [f"{cmd['name']} {o['opts'][0]}" for o in cmd["options"] if not o["help"]]
    assert missing == []


def test_vmoduser_page_lists_every_flag():
    text = open(os.path.join(ROOT, "man", "vmoduser.1")).read()
    from vcli import flags as F

    for f in F.FLAGS:
        assert f"\\fB\\-{f.letter}\\fR" in text and f.name in text


def test_exit_code_table_agrees_with_the_readme():
    readme = open(os.path.join(ROOT, "README.md")).read()
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([0-9–-]+) \| (.+) \|$", table, re.M)
    assert [code.replace("–", "-") for code, _ in rows] == [code for code, _ in gendocs.EXIT_CODES]
