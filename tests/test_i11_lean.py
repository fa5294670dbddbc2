"""Issue 11 item 4: the classic lookup commands start lean.

`vuserinfo user@domain` and `vdominfo` must not import dataclasses, inspect, re, json, enum,
contextlib, functools, collections (~2.4 ms together: the lock helpers carry their own)
(nor typing, which imports re): each costs start-up time on a command that does one lookup.
The scan runs the real commands on a real store, so a new import anywhere on the path shows.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import subprocess
import sys

import pytest
from storeenv import make_env, run, tool

import vcli
from vcli.model import AssignEntry, DomainInfo, Limits, VUser, check_new_domain, check_user
from vcli.record import fields, record

BANNED = {"dataclasses", "inspect", "re", "json", "enum", "typing", "contextlib", "functools", "collections"}
SRC = os.path.dirname(os.path.dirname(os.path.abspath(vcli.__file__)))

# Runs a classic entry point in a bare interpreter (-S: no site, so nothing is imported before
# the command but the interpreter's own start-up) and reports on stderr what it imported.
PROBE = """
import sys
before = set(sys.modules)
sys.argv = [{name!r}, *{args!r}]
from vcli.cli.classic import {name}
import os


def _exit(code):  # the lookups leave by os._exit (no teardown): report first
    raise SystemExit(code)


os._exit = _exit
try:
    code = {name}()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
new = sorted(set(sys.modules) - before)
sys.stderr.write("IMPORTED " + " ".join(new) + "\\n")
sys.exit(code or 0)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    env = make_env(tmp_path_factory.mktemp("lean"))
    for argv in (("vadddomain", "lean.test", "Pm-pass1x"), ("vadduser", "alice@lean.test", "Al-pass1x")):
        r = run(env, *argv)
        assert r.returncode == 0, r.stderr
    return env


def _probe(env: dict, name: str, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    env = dict(env, PYTHONPATH=SRC)
    r = subprocess.run([sys.executable, "-S", "-c", PROBE.format(name=name, args=list(args))],
                       env=env, capture_output=True, text=True)
    line = [x for x in r.stderr.splitlines() if x.startswith("IMPORTED ")]
    assert len(line) == 1, r.stderr
    return r, set(line[0].split()[1:])


@pytest.mark.parametrize("argv,shown", [(("vuserinfo", "alice@lean.test"), "name:   alice"),
                                        (("vuserinfo", "-q", "alice@lean.test"), "NOQUOTA"),
                                        (("vdominfo", "lean.test"), "domain: lean.test"),
                                        (("vdominfo",), "domain: lean.test")], ids=["vuserinfo", "vuserinfo-q",
                                                                                  "vdominfo", "vdominfo-all"])
def test_i11_04_lookup_path_imports_nothing_heavy(store, argv, shown):
    """The classic lookups import none of the banned modules (and still answer)."""
    r, imported = _probe(store, *argv)
    assert r.returncode == 0, r.stderr
    assert shown in r.stdout
    assert any(m.startswith("vcli.store") for m in imported)  # the probe saw the real path
    assert sorted(imported & BANNED) == []


def test_i11_04_lookup_on_a_site_with_its_vpopmail_config_h_imports_nothing_heavy(tmp_path):
    """A real cdb site has ~vpopmail/include/vpopmail_config.h, which the lookups read: reading it
    imports nothing banned either (its parser once imported re and enum on every lookup)."""
    from sqlenv import make_sql_env

    env = make_sql_env(tmp_path)
    for argv in (("vadddomain", "site.test", "Pm-pass1x"), ("vadduser", "bob@site.test", "Bo-pass1x")):
        r = run(env, *argv)
        assert r.returncode == 0, r.stderr
    for argv, shown in ((("vuserinfo", "bob@site.test"), "name:   bob"), (("vdominfo", "site.test"), "domain: site.test")):
        r, imported = _probe(env, *argv)
        assert r.returncode == 0 and shown in r.stdout, r.stderr
        assert "vcli.site" in imported and sorted(imported & BANNED) == [], argv


def test_i11_04_installed_script_imports_nothing_heavy(store):
    """The installed `vuserinfo` under -X importtime: no banned module is imported by the script
    or by a vcli module.  (The classic commands are plain scripts, bin/: pip's console-script
    wrapper imports re at its top.  What the interpreter's `site` imports -- an editable install's
    finder -- is the venv's, not the command's.)"""
    r = subprocess.run([sys.executable, "-X", "importtime", tool("vuserinfo"), "alice@lean.test"],
                       env=store, capture_output=True, text=True)
    assert r.returncode == 0 and "alice" in r.stdout, r.stderr
    stack: list[tuple[int, str]] = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \|( *)(\S+)$", line)
        if m:
            stack.append((len(m.group(1)), m.group(2)))
    # importtime prints children before their parent, deeper-indented: a module's importer is the
    # next line with less indentation, up to a top-level line (the script's own import)
    heavy = []
    for i, (depth, mod) in enumerate(stack):
        if mod.split(".")[0] not in BANNED:
            continue
        chain, d = [mod], depth
        for pd, pmod in stack[i + 1:]:
            if pd < d:
                chain.append(pmod)
                d = pd
            if d <= 1:
                break
        if chain[-1] != "site" and not chain[-1].startswith(("encodings", "_distutils_hack")):
            heavy.append(" <- ".join(chain))
    assert any(mod.startswith("vcli.store") for _, mod in stack)
    assert heavy == []
    with open(tool("vuserinfo")) as f:
        assert "import re" not in f.read()


# --- the record type that replaced @dataclass keeps the behaviour other code relies on -----------


def test_i11_04_records_behave_as_the_dataclasses_did():
    u = VUser("bob", "x", gecos="Bob")
    assert u == VUser("bob", "x", "1", 0, "Bob") and u != VUser("bob")
    assert repr(u).startswith("VUser(name='bob', passwd='x', uid='1'")
    assert u.replace(gecos="B").gecos == "B" and u.gecos == "Bob"
    assert fields(VUser)[:3] == ("name", "passwd", "uid")
    assert pickle.loads(pickle.dumps(u)) == u
    e = AssignEntry("a.test", "a.test", 89, 89, "/d")
    with pytest.raises(AttributeError):
        e.dir = "/elsewhere"
    assert hash(e) == hash(AssignEntry("a.test", "a.test", 89, 89, "/d")) and pickle.loads(pickle.dumps(e)) == e
    a, b = DomainInfo(e, 1), DomainInfo(e, 2)
    a.aliases.append("x")
    assert b.aliases == []  # a fresh list each, as default_factory
    assert DomainInfo(e, 1, ["x"]).as_dict() == {"entry": {"name": "a.test", "real": "a.test", "uid": 89,
                                                          "gid": 89, "dir": "/d"}, "users": 1, "aliases": ["x"]}
    assert Limits.parse(b"maxaliases: 5\r\ndisable_pop\n#x\nperm_account:\t 3\nquota:  -7z\n").as_dict() == dict(
        Limits().as_dict(), maxaliases=5, disable_pop=True, perm_account=3, quota=-7)
    with pytest.raises(TypeError):
        VUser()  # name is required

    @record
    class P:
        a: int
        b: list = None

    assert P(1) == P(a=1, b=None) and P(1, [2]).replace(a=3) == P(3, [2])


def test_i11_04_name_rules_match_the_old_regular_expressions():
    """The str-method name rules accept exactly what the regular expressions did."""
    user_re = re.compile(r"[!#$&'*+\-.0-9=?A-Z^_`a-z{|}~]+\Z")
    label_re = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
    rnd = random.Random(11)
    alphabet = "aZ09-._!#/@ :+~\té"
    for _ in range(20000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 6)))
        try:
            check_user(text)
            ok = True
        except Exception:
            ok = False
        old = text.isascii() and bool(user_re.match(text)) and not text.startswith(("-", ".")) and ".." not in text
        assert ok == old, text
        dom = text.lower() + ".test"
        try:
            check_new_domain(dom)
            ok = True
        except Exception:
            ok = False
        old = (dom.isascii() and bool(re.match(r"[A-Za-z0-9.\-]+\Z", dom)) and ".." not in dom
               and not dom.startswith(("-", ".")) and all(label_re.match(x) for x in dom.split(".")))
        assert ok == old, dom


def test_i11_04_fsutil_contextmanager_behaves_as_contextlibs():
    """fsutil.contextmanager (the lookup path's, without contextlib) against contextlib's."""
    import contextlib

    from vcli.store import fsutil

    def make(deco):
        log = []

        @deco
        def cm(swallow=False):
            log.append("enter")
            try:
                yield 42
            except KeyError:
                log.append("caught")
                if not swallow:
                    raise
            finally:
                log.append("exit")

        return cm, log

    for body in ("ok", "raise", "swallow", "other"):
        seen = []
        for deco in (contextlib.contextmanager, fsutil.contextmanager):
            cm, log = make(deco)
            outcome = None
            try:
                with cm(swallow=body == "swallow") as v:
                    log.append(v)
                    if body in ("raise", "swallow"):
                        raise KeyError("k")
                    if body == "other":
                        raise ValueError("v")
            except (KeyError, ValueError) as exc:
                outcome = type(exc).__name__
            seen.append((log, outcome))
        assert seen[0] == seen[1], (body, seen)
    with pytest.raises(RuntimeError, match="didn't yield"):
        with fsutil.contextmanager(lambda: iter(()))():
            pass


def test_i11_04_password_policy_read_without_re(tmp_path):
    """password_strength.conf's `Policy = text` line is read by hand (re is ~5 ms of every
    vadduser): over lines built from what matters (case of the keyword, blanks, '=', comments,
    rules), the text and rules it finds are those the old `policy\\s*=\\s*(.*)` found, the keyword's
    case ignored for ASCII letters (as vpopmail's strncasecmp does)."""
    import random

    from vcli.store.passwords import Policy

    def by_pattern(lines: list[str]):
        text = None
        for line in lines:
            line = line.split("#", 1)[0].strip()
            m = re.match(r"[Pp][Oo][Ll][Ii][Cc][Yy]\s*=\s*(.*)", line)
            if m:
                text = m.group(1).strip()
        return text

    tokens = ["Policy", "POLICY", "policy", "PoLiCy", "polic", "policyx", " ", "\t", "=", "==", "# c", "text",
              "Must be long", "Length", ">=", "8", "\u00a0", "Numeric"]
    rng = random.Random(11)
    (tmp_path / "etc").mkdir()
    for _ in range(400):
        lines = ["".join(rng.choice(tokens) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 4))]
        lines.append("Length >= 3")
        (tmp_path / "etc" / "password_strength.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
        got = Policy.load(str(tmp_path))
        assert got.text == by_pattern(lines), lines
        assert ("length", ">=", 3.0) in got.rules


def test_i11_04_context_stack_behaves_as_exitstack():
    """fsutil.ContextStack (the writes' ExitStack without contextlib) against contextlib.ExitStack:
    the order contexts are left in, what they see, suppression, an error raised while leaving."""
    import contextlib

    from vcli.store.fsutil import ContextStack

    def run(stack_class, body_error, suppress_at, fail_at):
        log = []

        class C:
            def __init__(self, n):
                self.n = n

            def __enter__(self):
                log.append(("in", self.n))
                return self.n

            def __exit__(self, t, v, tb):
                log.append(("out", self.n, t.__name__ if t else None))
                if self.n == fail_at:
                    raise KeyError(self.n)
                return self.n == suppress_at

        try:
            with stack_class() as stack:
                got = [stack.enter_context(C(n)) for n in (1, 2, 3)]
                log.append(("got", tuple(got)))
                if body_error:
                    raise ValueError("body")
            log.append("after")
        except (ValueError, KeyError) as exc:
            log.append(("raised", type(exc).__name__))
        return log

    for body_error in (False, True):
        for suppress_at in (None, 1, 2, 3):
            for fail_at in (None, 1, 2, 3):
                args = (body_error, suppress_at, fail_at)
                assert run(ContextStack, *args) == run(contextlib.ExitStack, *args), args
