"""Issue 13 item 1: the layering the house relies on, checked so it does not regress."""

from __future__ import annotations

import ast
import inspect
import pathlib

import pytest

from vcli.backend import Backend, LocalBackend
from vcli.protocol.remote import RemoteBackend
from vcli.store.store import Store

ROOT = pathlib.Path(__file__).resolve().parent.parent / "vcli"
CORE = ["backend.py", "model.py", "config.py", "site.py", "secretfile.py", "errors.py", "flags.py",
        "backend_common.py", "store", "protocol", "daemon"]


def _protocol_methods(proto) -> dict[str, inspect.Signature]:
    out = {}
    for name, value in vars(proto).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            out[name] = None
        elif callable(value):
            out[name] = inspect.signature(value)
    return out


def _compatible(want: inspect.Signature, have: inspect.Signature) -> str | None:
    """None if `have` accepts every call `want` allows: same names, kinds and defaults; extra
    parameters of `have` must have defaults."""
    hp = dict(have.parameters)
    for name, p in want.parameters.items():
        q = hp.pop(name, None)
        if q is None:
            return f"missing parameter {name}"
        if q.kind != p.kind and not (p.kind is p.POSITIONAL_OR_KEYWORD and q.kind is q.POSITIONAL_OR_KEYWORD):
            return f"{name}: kind {q.kind} != {p.kind}"
        if (p.default is p.empty) != (q.default is q.empty):
            return f"{name}: default differs ({p.default!r} vs {q.default!r})"
        if p.default is not p.empty and p.default != q.default:
            return f"{name}: default {q.default!r} != {p.default!r}"
    extra = [n for n, q in hp.items() if q.default is q.empty and q.kind not in (q.VAR_KEYWORD, q.VAR_POSITIONAL)]
    return f"extra required parameters {extra}" if extra else None


@pytest.mark.parametrize("impl", [Store, RemoteBackend], ids=["local", "remote"])
def test_i13_01_backend_protocol_satisfied(impl):
    """Store and RemoteBackend both offer every Backend method with compatible parameters."""
    methods = _protocol_methods(Backend)
    assert len(methods) > 25
    problems = []
    for name, sig in methods.items():
        member = getattr(impl, name, None)
        if member is None:
            problems.append(f"{impl.__name__}.{name} missing")
            continue
        why = _compatible(sig, inspect.signature(member))
        if why:
            problems.append(f"{impl.__name__}.{name}: {why}")
    assert problems == []


def test_i13_01_local_backend_extras_on_store():
    """What the daemon needs beyond Backend (limits writes, catch-all, root) is on Store."""
    problems = []
    for name, sig in _protocol_methods(LocalBackend).items():
        member = getattr(Store, name, None)
        if member is None:
            problems.append(f"Store.{name} missing")
        elif sig is not None and (why := _compatible(sig, inspect.signature(member))):
            problems.append(f"Store.{name}: {why}")
    assert problems == [] and "set_limits" in _protocol_methods(LocalBackend)


def _imports(path: pathlib.Path) -> list[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    rel = path.relative_to(ROOT.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]  # `from . import cli`
    return out


def _core_files() -> list[pathlib.Path]:
    files = []
    for name in CORE:
        p = ROOT / name
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.exists() else []
    return files


def test_i13_01_core_never_imports_cli():
    """backend, model, config, site, store, protocol and daemon never import from vcli/cli/."""
    files = _core_files()
    assert len(files) > 20 and ROOT / "backend.py" in files
    bad = [(str(f.relative_to(ROOT)), m) for f in files for m in _imports(f)
           if m == "vcli.cli" or m.startswith("vcli.cli.")]
    assert bad == []


def test_i13_01_import_scan_sees_relative_cli_imports(tmp_path):
    """The scanner itself: a relative `from ..cli.common import x` in vcli/store counts."""
    probe = ROOT / "store" / "_probe_i13.py"
    probe.write_text("from ..cli.common import warn\nfrom .. import cli\n")
    try:
        assert "vcli.cli.common" in _imports(probe) and "vcli.cli" in _imports(probe)
    finally:
        probe.unlink()


def test_i13_01_model_has_no_io_and_no_layer_above():
    """vcli/model.py imports only the standard library's pure modules, flags and errors."""
    mods = {m for m in _imports(ROOT / "model.py") if "." not in m or m.startswith("vcli.")}
    top = {m.split(".")[0] if not m.startswith("vcli.") else ".".join(m.split(".")[:2]) for m in mods}
    assert top <= {"__future__", "re", "dataclasses", "vcli", "vcli.flags", "vcli.errors", "vcli.record"}, top
    src = (ROOT / "model.py").read_text()
    assert "open(" not in src and "os." not in src


@pytest.mark.parametrize("module, cls", [("cdb", "CdbAuth"), ("mysql", "MysqlAuth")])
def test_i13_01_auth_modules_satisfy_auth_protocol(module, cls):
    """Each auth module offers every AuthModule method with compatible parameters."""
    import importlib

    from vcli.store.auth import AuthModule

    impl = getattr(importlib.import_module(f"vcli.store.auth.{module}"), cls)
    methods = _protocol_methods(AuthModule)
    assert {"get_user", "list_users", "add_users", "modify_user", "delete_user", "dir_control",
            "lastauth", "set_lastauth", "create_domain", "delete_domain", "import_records"} <= set(methods)
    problems = [f"{n}: {why}" for n, sig in methods.items()
                if (why := "missing" if not hasattr(impl, n)
                    else _compatible(sig, inspect.signature(getattr(impl, n))))]
    assert problems == []


def test_i13_01_cdb_lastauth_round_trip(base):
    """set_lastauth writes what vchkpw writes (the IP, no newline, 0600); lastauth reads it back."""
    import os
    import stat

    from cli_helpers import CliStore, patched_environ

    from vcli.config import load_settings

    st = CliStore(base)
    st.ok("vadddomain", "example.test", "Pm-pass1")
    with patched_environ(st.env):
        store = Store(load_settings())
        entry = store.real_entry("example.test")
        pm = store.get_user("postmaster", "example.test")
        assert store.lastauth(pm)[1] == "0.0.0.0"  # what vadduser writes
        store.auth.set_lastauth(entry, pm, "192.0.2.7")
        when, ip = store.lastauth(pm, "example.test")
    path = os.path.join(pm.dir, "lastauth")
    assert ip == "192.0.2.7" and open(path, "rb").read() == b"192.0.2.7"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and when > 0
