"""qmail's side of a domain: users/assign and its cdb, rcpthosts, morercpthosts,
virtualdomains and locals (spec/store.md §5).
"""

from __future__ import annotations

import os
from _collections_abc import Callable  # collections.abc without the collections package (start-up)

from ..errors import StoreIOError
from ..model import AssignEntry  # noqa: F401 - re-exported for old callers
from . import cdb
from .fsutil import atomic_write, io_error, journal, locked, read_bytes, remove_file

RCPTHOSTS_MAX = 50  # beyond this many lines new domains go to morercpthosts


def domain_sort_key(domain: bytes) -> bytes:
    """'a.b.example.com' -> 'example.com.a.b': vpopmail's order for qmail files."""
    labels = domain.split(b".")[:10]
    if len(labels) >= 2:
        labels = labels[-2:] + labels[:-2]
    return b".".join(labels)


def _assign_key(line: bytes) -> bytes:
    local = line[1:].split(b":", 1)[0]
    return domain_sort_key(local[:-1] if local.endswith(b"-") else local)


def _vd_key(line: bytes) -> bytes:
    return domain_sort_key(line.split(b":", 1)[0])


def _host_key(line: bytes) -> bytes:
    return domain_sort_key(line.rstrip(b"\n"))


class QmailFiles:
    """The qmail files of one qmail directory."""

    def __init__(self, qmail_dir: str, warn: Callable[[str], None] = lambda m: None, lock_wait: float | None = None):
        self.dir = qmail_dir
        self.warn = warn
        self.lock_wait = lock_wait

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    # --- users/assign --------------------------------------------------------

    def assign_entries(self) -> list[AssignEntry]:
        data = read_bytes(self.path("users", "assign"))
        if data is None:
            return []
        out = []
        for line in data.split(b"\n"):
            if line == b".":
                break
            e = _parse_assign(line)
            if e:
                out.append(e)
        return out

    def lookup(self, domain: str) -> AssignEntry | None:
        """The users/cdb entry for `domain`, as every vpopmail program finds it."""
        path = self.path("users", "cdb")
        j = journal()
        try:
            with cdb.CdbReader(path, j.files.get(path) if j and path in j.files else None) as r:
                value = r.get(b"!" + domain.encode() + b"-")
        except FileNotFoundError:
            return None
        except OSError as exc:  # unreadable is not "no such domain"
            raise io_error(exc, path) from None
        except ValueError:
            return None
        if value is None:
            return None
        parts = value.split(b"\0")
        if len(parts) < 4:
            return None
        try:
            return AssignEntry(domain, parts[0].decode(), int(parts[1]), int(parts[2]), parts[3].decode())
        except (ValueError, UnicodeDecodeError):
            return None

    def add_assign(self, entry: AssignEntry) -> None:
        self._insert_sorted(self.path("users", "assign"), entry.line(), _assign_key, before_dot=True)
        self.compile_assign()

    def remove_assign(self, entry: AssignEntry) -> None:
        self._remove_lines(self.path("users", "assign"), {entry.line()})
        self.compile_assign()

    def compile_assign(self) -> None:
        """Regenerate users/cdb: qmail-newu when installed, else the same bytes ourselves.

        Under the assign lock: qmail-newu and we both write the fixed temp name users/cdb.tmp,
        and the last compile must see the last edit of users/assign."""
        newu = self.path("bin", "qmail-newu")
        with locked(self.path("users", "assign") + ".lock", self.lock_wait):
            if os.access(newu, os.X_OK) and journal() is None:
                _run_tool(newu, self.dir, "users/cdb", "`vcli check --repair` rebuilds it")
                return
            data = read_bytes(self.path("users", "assign")) or b".\n"
            atomic_write(self.path("users", "cdb"), users_cdb(data), mode=0o644, tmp_name="cdb.tmp")

    # --- control files --------------------------------------------------------

    def add_rcpthost(self, domain: str) -> None:
        rcpt = read_bytes(self.path("control", "rcpthosts")) or b""
        if rcpt.count(b"\n") >= RCPTHOSTS_MAX:
            self._insert_sorted(self.path("control", "morercpthosts"), domain.encode() + b"\n", _host_key)
            self._compile_morercpthosts()
        else:
            self._insert_sorted(self.path("control", "rcpthosts"), domain.encode() + b"\n", _host_key)

    def remove_rcpthost(self, domain: str) -> None:
        line = domain.encode() + b"\n"
        if line in (read_bytes(self.path("control", "rcpthosts")) or b"").splitlines(keepends=True):
            self._remove_lines(self.path("control", "rcpthosts"), {line})
            return
        more = self.path("control", "morercpthosts")
        if line in (read_bytes(more) or b"").splitlines(keepends=True):
            self._remove_lines(more, {line})
            if not read_bytes(more):
                for p in (more, more + ".cdb"):
                    try:
                        remove_file(p)
                    except FileNotFoundError:
                        pass
            else:
                self._compile_morercpthosts()

    def add_virtualdomain(self, domain: str) -> None:
        self._insert_sorted(self.path("control", "virtualdomains"), f"{domain}:{domain}\n".encode(), _vd_key)

    def remove_virtualdomain(self, domain: str) -> None:
        self._remove_lines(self.path("control", "virtualdomains"), {f"{domain}:{domain}\n".encode()})

    def remove_local(self, domain: str) -> None:
        self._remove_lines(self.path("control", "locals"), {domain.encode() + b"\n"})

    def _compile_morercpthosts(self) -> None:
        newmrh = self.path("bin", "qmail-newmrh")
        if os.access(newmrh, os.X_OK) and journal() is None:
            _run_tool(newmrh, self.dir, "control/morercpthosts.cdb", "run qmail-newmrh again")
            return
        data = read_bytes(self.path("control", "morercpthosts")) or b""
        recs = [(line.strip().lower(), b"") for line in data.split(b"\n") if line.strip()]
        atomic_write(self.path("control", "morercpthosts.cdb"), cdb.build(recs), mode=0o644)

    def hup_qmail_send(self) -> None:
        """SIGHUP qmail-send so it rereads its control files (found via /proc, no shell)."""
        j = journal()
        if j is not None:
            j.note("signal", "qmail-send (SIGHUP)")
            return
        try:
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0", 1)[0]
            except OSError:
                continue
            if os.path.basename(argv0) == b"qmail-send":  # not `less qmail-send.log`: SIGHUP would kill it
                try:
                    import signal  # here: `signal` imports enum (issue 11 item 4)

                    os.kill(int(pid), signal.SIGHUP)
                except OSError:
                    pass

    # --- line editing with vpopmail's locks -----------------------------------

    def _insert_sorted(self, path: str, line: bytes, key: Callable[[bytes], bytes], before_dot: bool = False) -> None:
        if journal() is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with locked(path + ".lock", self.lock_wait):
            data = read_bytes(path)
            if data is None:
                data = b".\n" if before_dot else b""
            lines = data.splitlines(keepends=True)
            if lines and not lines[-1].endswith(b"\n"):
                lines[-1] += b"\n"
            tail: list[bytes] = []
            if before_dot and b".\n" in lines:
                i = lines.index(b".\n")
                lines, tail = lines[:i], [b".\n"]
            elif before_dot:
                tail = [b".\n"]
            keys = [key(x) for x in lines]
            if any(b < a for a, b in zip(keys, keys[1:], strict=False)):
                self.warn(f"NOTICE: Out of order entries found in {path}\n   Sorting...\n")
                lines = sorted(lines, key=key)
                keys = [key(x) for x in lines]
            new_key = key(line)
            pos = next((i for i, k in enumerate(keys) if k > new_key), len(lines))
            lines.insert(pos, line)
            atomic_write(path, b"".join(lines + tail), mode=0o644, tmp_name=f"{os.path.basename(path)}.{os.getpid()}")

    def _remove_lines(self, path: str, drop: set[bytes]) -> None:
        if journal() is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with locked(path + ".lock", self.lock_wait):
            data = read_bytes(path) or b""
            lines = [x for x in data.splitlines(keepends=True) if x not in drop and x.rstrip(b"\n") + b"\n" not in drop]
            atomic_write(path, b"".join(lines), mode=0o644, tmp_name=f"{os.path.basename(path)}.{os.getpid()}")


def _parse_assign(line: bytes) -> AssignEntry | None:
    if not line.startswith(b"+"):
        return None
    parts = line.split(b":")
    local = parts[0][1:]
    if len(parts) < 5 or b"." not in local or not local.endswith(b"-"):
        return None
    try:
        return AssignEntry(local[:-1].decode(), parts[1].decode(), int(parts[2]), int(parts[3]), parts[4].decode())
    except (ValueError, UnicodeDecodeError):
        return None


def users_cdb(assign: bytes) -> bytes:
    """users/cdb exactly as qmail-newu compiles users/assign.

    Key: '!' + lower(local) (+ NUL for '=' lines).  Value: the text after the first ':' up to
    the 6th colon after it, the colons before that one turned into NULs -- for vpopmail's
    `+dom-:real:uid:gid:dir:-::` lines `real\0uid\0gid\0dir\0-\0` (the empty prepend field).
    The last record maps "" to the distinct last characters of the '+' locals, as written.
    """
    records = []
    last_chars: list[bytes] = []
    for line in assign.split(b"\n"):
        if line[:1] == b".":
            break
        if not line or line[:1] not in (b"+", b"="):
            continue
        local, _, rest = line[1:].partition(b":")
        value = b"\0".join(rest.split(b":")[:6])
        if line[:1] == b"+":
            records.append((b"!" + local.lower(), value))
            if local and local[-1:] not in last_chars:
                last_chars.append(local[-1:])
        else:
            records.append((b"!" + local.lower() + b"\0", value))
    records.append((b"", b"".join(last_chars)))
    return cdb.build(records)


def _run_tool(path: str, cwd: str, output: str, fix: str) -> None:
    """Run qmail-newu/qmail-newmrh as qmail does: its own path as the whole argv, no shell, no
    input.  A failure is one clear error (exit 74) naming what is now stale."""
    import subprocess

    try:
        r = subprocess.run([path], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, close_fds=True)
    except OSError as exc:
        raise StoreIOError(f"cannot run {path}: {exc.strerror}; {output} is stale ({fix})") from None
    if r.returncode != 0:
        why = r.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {r.returncode}"]
        raise StoreIOError(f"{os.path.basename(path)} failed ({why[0]}); {output} is stale ({fix})")
