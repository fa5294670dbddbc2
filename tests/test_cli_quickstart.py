"""The README quick start (`examples/quickstart.sh`) on a fresh embedded store."""

from __future__ import annotations

import os
import pwd
import re
import subprocess

import pytest
from cli_helpers import REPO, asctime, clean_env, verify


def _has_vpopmail_user() -> bool:
    try:
        return os.path.isdir(pwd.getpwnam("vpopmail").pw_dir)
    except KeyError:
        return False


@pytest.mark.skipif(_has_vpopmail_user(), reason="a vpopmail user exists: vcli would use its store")
def test_quickstart_on_the_embedded_store(base):
    tmp_path = base
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    env = clean_env(HOME=str(home), XDG_DATA_HOME=str(data), XDG_CONFIG_HOME=str(tmp_path / "config"),
                    VCLI_CONFIG=os.devnull)
    script = str(REPO / "examples" / "quickstart.sh")

    def run():
        return subprocess.run(["sh", script], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)

    p = run()
    assert p.returncode == 0, p.stderr
    root = data / "vcli" / "store"
    announce = f"vcli: no vpopmail installation found; using the embedded store in {root}\n"
    assert p.stderr == announce  # once, by the first command; nothing else on stderr
    vp, qm = root / "vpopmail", root / "qmail"
    ddir = vp / "domains" / "example.test"
    lines = p.stdout.splitlines(keepends=True)
    m1, m2 = (re.fullmatch(r"Random password: (\S{12})\n", x) for x in lines[:2])
    assert m1 and m2, p.stdout
    vpasswd = {ln.split(":")[0]: ln.split(":") for ln in (ddir / "vpasswd").read_text().splitlines()}
    assert verify(m1.group(1), vpasswd["postmaster"][1]) and verify(m2.group(1), vpasswd["alice"][1])
    uid, gid = os.getuid(), os.getgid()
    created = asctime(os.stat(ddir / "alice" / "lastauth").st_mtime)
    assert "".join(lines[2:]) == (
        "name:   alice\n"
        f"passwd: {vpasswd['alice'][1]}\n"
        "clear passwd: \n"
        "comment/gecos: alice\n"
        "uid:    1\n"
        "gid:    4096\n"
        "flags:  4096\n"
        "gecos: alice\n"
        "limits:\n"
        "        has qmailadmin administrator access\n"
        f"dir:       {ddir}/alice\n"
        "quota:     NOQUOTA\n"
        "usage:     NOQUOTA\n"
        f"account created: {created}\n"
        "last auth: Never logged in\n"
        "domain: example.test\n"
        f"uid:    {uid}\n"
        f"gid:    {gid}\n"
        f"dir:    {ddir}\n"
        "users:  2\n"
    )
    assert (qm / "users" / "assign").read_text() == f"+example.test-:example.test:{uid}:{gid}:{ddir}:-::\n.\n"
    assert (ddir / ".qmail-default").read_text() == f"| {vp}/bin/vdelivermail '' delete\n"

    again = run()  # "Safe to run again": nothing new, no second announcement
    assert again.returncode == 0 and again.stderr == ""
    assert again.stdout == "".join(lines[2:])
