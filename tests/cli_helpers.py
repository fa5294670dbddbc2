"""Shared helpers of the end-to-end command tests (tests/test_cli_*.py).

A `CliStore` is a fresh vpopmail + qmail tree in a temporary directory, with the
environment that points the commands at it.  Commands run either as the installed
console scripts (subprocesses: the real entry points, argv parsing, exit status)
or in-process through `vcli.cli.classic.MAINS` where a subprocess adds nothing.
Files are checked against spec/store.md with the independent `pure-cdb` package.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cdblib

REPO = Path(__file__).resolve().parent.parent
BIN = os.path.dirname(sys.executable)

# The ids written to users/assign (spec examples use vpopmail = 89, vchkpw = 89).
UID = GID = 89

HASH_RE = re.compile(r"\$6\$[./0-9A-Za-z]{8}\$[./0-9A-Za-z]{86}")
ASCTIME_RE = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4}")
SEPARATOR = "-" * 42


@contextlib.contextmanager
def fast_base(tmp_path: Path):
    """A directory for a test store: on tmpfs (/dev/shm) when there is one, since the commands'
    many small mkdir/rename/fsync calls are several times slower on most disks; else tmp_path."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) and not os.environ.get("VCLI_TEST_NO_SHM"):
        import tempfile

        d = tempfile.mkdtemp(prefix="vcli-test-", dir=shm)
        try:
            yield Path(d)
        finally:
            for dirpath, _dirnames, _filenames in os.walk(d):
                os.chmod(dirpath, 0o755)  # tests may leave directories read-only
            shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path


def tool(name: str) -> str:
    """The installed entry point: the venv's bin dir first on PATH."""
    path = shutil.which(name, path=os.pathsep.join([BIN, os.environ.get("PATH", "")]))
    assert path, f"{name} is not installed (pip install -e .)"
    return path


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def t(self) -> tuple[int, str, str]:
        return self.rc, self.out, self.err

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without anything that could redirect vcli, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VCLI_") and k not in ("VPOPMAIL_DIR", "QMAIL_DIR", "VPOPMAIL_DOMAIN")}
    env["PATH"] = os.pathsep.join([BIN, env.get("PATH", "")])
    env.update(extra)
    return env


def _umask022() -> None:
    os.umask(0o022)


class CliStore:
    """A fresh store: <base>/vpopmail (etc/ with the shipped defaults) and <base>/qmail."""

    def __init__(self, base: Path, **env: str):
        self.base = Path(base)
        self.vp = self.base / "vpopmail"
        self.qm = self.base / "qmail"
        (self.vp / "etc").mkdir(parents=True)
        (self.qm / "users").mkdir(parents=True)
        for name in ("vlimits.default", "password_strength.conf"):
            shutil.copyfile(REPO / "vcli" / "data" / name, self.vp / "etc" / name)
            os.chmod(self.vp / "etc" / name, 0o644)
        (self.qm / "users" / "assign").write_bytes(b".\n")
        for d in (self.vp, self.vp / "etc", self.qm, self.qm / "users"):
            os.chmod(d, 0o755)  # whatever the umask of the test run
        self.env = clean_env(**{"VPOPMAIL_DIR": str(self.vp), "QMAIL_DIR": str(self.qm),
                                "VCLI_CONFIG": os.devnull,  # no config file (a missing one is an error)
                                "VCLI_VPOPMAIL_UID": str(UID), "VCLI_VPOPMAIL_GID": str(GID), **env})

    # --- running commands ---------------------------------------------------

    def run(self, name: str, *args: str, input: str | None = None, env: dict | None = None,
            cwd: str | None = None) -> Result:
        """The installed command `name` as a subprocess (umask 022, as in spec/tools.md §15)."""
        e = dict(self.env, **(env or {}))
        p = subprocess.run([tool(name), *args], env=e, input=input if input is not None else "",
                           capture_output=True, text=True, preexec_fn=_umask022, cwd=cwd, timeout=120)
        return Result(p.returncode, p.stdout, p.stderr)

    def ok(self, name: str, *args: str, **kw) -> Result:
        r = self.run(name, *args, **kw)
        assert r.rc == 0, (name, args, r)
        return r

    def call(self, name: str, *args: str, env: dict | None = None) -> Result:
        """The classic command in-process (vcli.cli.classic.MAINS), stdout/stderr captured."""
        from vcli.cli.classic import MAINS
        from vcli.cli.common import run

        out, err = io.StringIO(), io.StringIO()
        with patched_environ(dict(self.env, **(env or {}))), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err), umask(0o022):
            rc = run(lambda: MAINS[name](list(args)))
        return Result(rc, out.getvalue(), err.getvalue())

    def call_vcli(self, *args: str, env: dict | None = None) -> Result:
        """`vcli ARGS` in-process through its console-script function (vcli.cli.app.main)."""
        from vcli.cli.app import main

        out, err = io.StringIO(), io.StringIO()
        saved = sys.argv
        sys.argv = ["vcli", *args]
        try:
            with patched_environ(dict(self.env, **(env or {}))), contextlib.redirect_stdout(out), \
                    contextlib.redirect_stderr(err), umask(0o022):
                try:
                    main()
                    rc = 0
                except SystemExit as exc:
                    rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = saved
        return Result(rc, out.getvalue(), err.getvalue())

    def call_ok(self, name: str, *args: str, **kw) -> Result:
        r = self.call(name, *args, **kw)
        assert r.rc == 0, (name, args, r)
        return r

    # --- paths and files ------------------------------------------------------

    def ddir(self, domain: str) -> Path:
        return self.vp / "domains" / domain

    def vpasswd(self, domain: str) -> bytes:
        return (self.ddir(domain) / "vpasswd").read_bytes()

    def vpasswd_lines(self, domain: str) -> list[str]:
        return self.vpasswd(domain).decode().splitlines()

    def fields(self, domain: str, user: str) -> list[str]:
        for line in self.vpasswd_lines(domain):
            if line.split(":", 1)[0] == user:
                return line.split(":")
        raise AssertionError(f"{user} not in vpasswd of {domain}")

    def fields_of(self, ddir: Path, user: str) -> list[str]:
        """A vpasswd line of the domain directory `ddir` (domains outside vpopmail/domains)."""
        for line in (Path(ddir) / "vpasswd").read_text().splitlines():
            if line.split(":", 1)[0] == user:
                return line.split(":")
        raise AssertionError(f"{user} not in {ddir}/vpasswd")

    def snapshot(self) -> dict[str, tuple[int, bytes | None]]:
        return snapshot(self.base)


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def patched_environ(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under `root` -> (st_mode, file bytes or link target; None for a directory)."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = (st.st_mode, None)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = (st.st_mode, os.readlink(path).encode())
            else:
                with open(path, "rb") as f:
                    out[rel] = (st.st_mode, f.read())
    return out


def diff_snapshots(a: dict, b: dict) -> list[str]:
    """Readable differences between two snapshots (empty when identical)."""
    out = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            out.append(f"new: {k}")
        elif k not in b:
            out.append(f"gone: {k}")
        elif a[k] != b[k]:
            out.append(f"changed: {k} {oct(a[k][0])}->{oct(b[k][0])}")
    return out


# --- cdb through the independent pure-cdb package --------------------------------


def cdb_records(data: bytes) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record, in file order."""
    return list(cdblib.Reader(data).iteritems())


def make_cdb(records) -> bytes:
    buf = io.BytesIO()
    w = cdblib.Writer(buf)
    for k, v in records:
        w.put(k, v)
    w.finalize()
    return buf.getvalue()


def vpasswd_cdb(vpasswd: bytes) -> bytes:
    """vpasswd.cdb as spec/store.md §4.1 says it must be: one record per line, in file order."""
    recs = []
    for line in vpasswd.split(b"\n")[:-1]:
        key, _, value = line.partition(b":")
        recs.append((key, value))
    return make_cdb(recs)


def assign_cdb(assign: bytes) -> bytes:
    """users/cdb as qmail-newu compiles users/assign (spec/store.md §5.2)."""
    recs = []
    lasts = set()
    for line in assign.split(b"\n"):
        if line == b".":
            break
        if not line.startswith(b"+"):
            continue
        local, _, rest = line[1:].partition(b":")
        fields = rest.split(b":")[:5]
        recs.append((b"!" + local.lower(), b"".join(f + b"\0" for f in fields)))
        lasts.add(local[-1:])
    recs.append((b"", b"".join(sorted(lasts))))
    return make_cdb(recs)


def asctime(ts: float) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(ts))


def mask_hashes(text: str) -> str:
    return re.sub(r"\$(1|5|6)\$[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]+", "<HASH>", text)


def mask_dates(text: str) -> str:
    text = ASCTIME_RE.sub("<DATE>", text)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", "<DATE>", text)


def masked_vpasswd(data: bytes) -> bytes:
    """vpasswd with the hash field (2nd) of every line replaced by a fixed string."""
    out = []
    for line in data.split(b"\n")[:-1]:
        f = line.split(b":")
        f[1] = b"<HASH>"
        out.append(b":".join(f) + b"\n")
    return b"".join(out)


def verify(clear: str, hashed: str) -> bool:
    import crypt_r

    return crypt_r.crypt(clear, hashed) == hashed


def check_domain(st: CliStore, domain: str, nfields: int = 7) -> list[list[str]]:
    """The invariants of spec/store.md every writer must keep; returns the parsed vpasswd lines.

    vpasswd sorted, newline-terminated, `nfields` fields a line; vpasswd.cdb byte-identical to
    the cdb of vpasswd; each home a 0700 tree with Maildir/{cur,new,tmp} and a 0600 lastauth;
    maildirsize exactly when the quota is set; `.dir-control` counting the users.
    """
    d = st.ddir(domain)
    vp = st.vpasswd(domain)
    assert vp.endswith(b"\n")
    lines = vp.split(b"\n")[:-1]
    names = [ln.split(b":", 1)[0] for ln in lines]
    assert names == sorted(names), "vpasswd not sorted"
    cdb_path = d / "vpasswd.cdb"
    assert cdb_path.read_bytes() == vpasswd_cdb(vp), "vpasswd.cdb differs from the cdb of vpasswd"
    assert stat.S_IMODE(cdb_path.stat().st_mode) == 0o600
    parsed = []
    for ln in lines:
        f = ln.decode().split(":")
        assert len(f) == nfields, ln
        home = Path(f[5])
        for sub in ("", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"):
            p = home / sub
            assert p.is_dir() and stat.S_IMODE(p.stat().st_mode) == 0o700, p
        la = home / "lastauth"
        assert la.is_file() and stat.S_IMODE(la.stat().st_mode) == 0o600
        ms = home / "Maildir" / "maildirsize"
        if f[6] in ("NOQUOTA", ""):
            assert not ms.exists(), ms
        else:
            assert ms.read_bytes() == f"{f[6]}\n0 0\n".encode()
            assert stat.S_IMODE(ms.stat().st_mode) == 0o600
        parsed.append(f)
    dc = (d / ".dir-control").read_bytes().split(b"\n")
    assert int(dc[0]) == len(lines), ".dir-control does not count the users"
    return parsed
