"""A fresh store in a temporary directory, laid out as on a real site, for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def tool(name: str) -> str:
    """The installed entry point `name` of the venv running the tests."""
    path = os.path.join(BIN, name)
    found = path if os.path.exists(path) else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: pip install -e . first")
    return found


def make_env(tmp_path) -> dict:
    """Environment for the commands: VPOPMAIL_DIR/QMAIL_DIR at a new store under tmp_path."""
    vp, qm = tmp_path / "vpopmail", tmp_path / "qmail"
    (vp / "etc").mkdir(parents=True)
    (qm / "users").mkdir(parents=True)
    for name in ("vlimits.default", "password_strength.conf"):
        shutil.copy(os.path.join(ROOT, "vcli", "data", name), vp / "etc" / name)
    (qm / "users" / "assign").write_text(".\n")
    env = dict(os.environ, VPOPMAIL_DIR=str(vp), QMAIL_DIR=str(qm))
    for var in ("VCLI_CONFIG", "VCLI_REMOTE", "VCLI_PROFILE", "VPOPMAIL_DOMAIN"):
        env.pop(var, None)
    return env


def trial_store(env: dict, domain: str, users: list[str], password: str):
    """The reliability trials' store: admin.test with the system admin sysadmin@admin.test
    (SysPass1), and `domain` (postmaster's password Pm-pass1) holding `users`."""
    from vcli import flags
    from vcli.config import load_settings
    from vcli.store.store import NewUser, Store, UserChanges

    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    st.add_domain("admin.test", "Admin-pm1")
    st.add_user("admin.test", NewUser("sysadmin", "SysPass1"))
    st.mod_user("sysadmin", "admin.test", UserChanges(set_flags=flags.SA_ADMIN))
    st.add_domain(domain, "Pm-pass1")
    st.add_users(domain, [NewUser(u, password) for u in users])
    return st


def missing_writes(present: dict, model: dict, who: str) -> list[str]:
    """What the store lacks of `who`'s last successful writes (the trials' lost updates).

    present: user name -> VUser now in the store; model: user name -> {"gecos", "pw"[, "quota"]}
    as the last successful operation of `who` left it (absent: deleted, or never added)."""
    from vcli.store.passwords import verify_password

    lost = []
    for name, m in model.items():
        u = present.get(name)
        if u is None:
            lost.append(f"{name}: added by {who} and not deleted, but missing")
            continue
        if u.gecos != m["gecos"]:
            lost.append(f"{name}: comment {u.gecos!r}, {who} last set {m['gecos']!r}")
        if "quota" in m and m["quota"] is not None and u.quota != m["quota"]:
            lost.append(f"{name}: quota {u.quota!r}, {who} last set {m['quota']!r}")
        if not verify_password(m["pw"], u.passwd):
            lost.append(f"{name}: the password {who} last set does not verify")
    return lost


def run(env: dict, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([tool(argv[0]), *argv[1:]], env=env, capture_output=True, text=True, input=stdin)


def snapshot(root) -> dict:
    """Every path below root -> (mode, bytes or None for directories): for 'nothing changed' checks."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    data = f.read()
            out[os.path.relpath(p, root)] = (st.st_mode, data)
    return out


# bash: source a completion script ($1) and print what it offers for the line $2
BASH_COMPLETE = r'''
source "$1"
COMP_LINE="$2"; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
fn=$(complete -p "${COMP_WORDS[0]}" | sed 's/.*-F \([^ ]*\).*/\1/')
"$fn"
printf '%s\n' "${COMPREPLY[@]}"
'''
