"""Fixtures shared by the tests: end-to-end command stores (`base`, `st`; modules override `st` when
they need another start) and the store library on a fresh tree (`store`, `snapshot`)."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import CliStore, fast_base
from fuzzscale import examples
from hypothesis import settings as hypothesis_settings

from vcli.config import Settings, load_settings
from vcli.store.store import Store

# property tests without their own count try 100 examples in CI, more with VCLI_FUZZ_SCALE
hypothesis_settings.register_profile("vcli", max_examples=examples(100))
hypothesis_settings.load_profile("vcli")

# tests/site/ runs only in the CI site stage (.ci/site-tests sets VCLI_TEST_SITE=1): it needs a
# vpopmail user, a venv under a 0700 directory of root's and root itself
collect_ignore = [] if os.environ.get("VCLI_TEST_SITE") == "1" else ["site"]

# private MariaDB / PostgreSQL servers for the SQL tests (`mariadb`, `postgres` fixtures)
pytest_plugins = ("sqlservers",)


@pytest.fixture()
def base(tmp_path):
    """A fresh store directory (on /dev/shm when there is one: this disk is slow at mkdir)."""
    with fast_base(tmp_path) as b:
        yield b


@pytest.fixture()
def st(base):
    """The commands on a store holding example.test and its postmaster."""
    s = CliStore(base)
    s.call_ok("vadddomain", "example.test", "Pm-pass1")
    return s


# --- the store library on a fresh tree (tests/test_store_*.py) -----------------------------------

_REPO_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vcli", "data")


@dataclass
class StoreTree:
    """A fresh vpopmail + qmail tree and a Store on it."""

    root: Path  # the directory holding vpopmail/ and qmail/
    vpopmail: Path
    qmail: Path
    settings: Settings
    store: Store
    warnings: list[str]

    def make(self, **overrides) -> Store:
        """Another Store on the same tree, with some settings changed (e.g. clear_passwords=True)."""
        s = load_settings({"vpopmail_dir": str(self.vpopmail), "qmail_dir": str(self.qmail), **overrides})
        return Store(s, warn=self.warnings.append)

    def domain_dir(self, domain: str) -> Path:
        return self.vpopmail / "domains" / domain


@pytest.fixture()
def store(tmp_path, monkeypatch) -> StoreTree:
    """`<tmp>/vpopmail/etc/` with the shipped vlimits.default and password_strength.conf,
    no `<tmp>/vpopmail/domains` yet, and `<tmp>/qmail/users/assign` = `.\\n`."""
    monkeypatch.setenv("VCLI_CONFIG", os.devnull)  # no config file (a missing one is an error)
    for var in [v for v in os.environ if v.startswith("VCLI_")] + ["VPOPMAIL_DIR", "QMAIL_DIR", "VPOPMAIL_DOMAIN"]:
        if var != "VCLI_CONFIG":
            monkeypatch.delenv(var, raising=False)
    vp, qm = tmp_path / "vpopmail", tmp_path / "qmail"
    (vp / "etc").mkdir(parents=True)
    (qm / "users").mkdir(parents=True)
    for name in ("vlimits.default", "password_strength.conf"):
        shutil.copyfile(os.path.join(_REPO_DATA, name), vp / "etc" / name)
        os.chmod(vp / "etc" / name, 0o644)
    (qm / "users" / "assign").write_bytes(b".\n")
    settings = load_settings({"vpopmail_dir": str(vp), "qmail_dir": str(qm)})
    warnings: list[str] = []
    return StoreTree(tmp_path, vp, qm, settings, Store(settings, warn=warnings.append), warnings)


def _snapshot(root) -> dict[str, tuple[int, bytes | None]]:
    """Every path below `root` -> (mode, bytes; None for directories and symlinks)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    data = f.read()
            out[os.path.relpath(p, root)] = (st.st_mode, data)
    return out


@pytest.fixture()
def snapshot():
    """snapshot(root) -> {relative path: (mode, bytes)}, for "nothing changed" assertions."""
    return _snapshot
