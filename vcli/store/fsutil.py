"""Crash-safe file writes and vpopmail-compatible locks.

Every file the store changes is written to a temporary name in the same
directory, fsync'ed, renamed over the old one and the directory fsync'ed, so a
crash leaves the old file or the new one.  Locks are POSIX record locks
(fcntl F_SETLK) on the same `*.lock` files vpopmail uses; flock() would not
exclude the C tools.
"""

from __future__ import annotations

import _thread  # threading's C core: importing threading costs ~1.3 ms of a lookup's start-up
import errno
import fcntl
import os
import stat
import time

from ..errors import LockBusy, StoreIOError


class _GeneratorContext:
    """What contextlib.contextmanager makes of a generator, for the lookup path's locks and
    journal: importing contextlib (with functools and collections) costs ~2.4 ms of every
    classic command's start-up.  Same protocol: the value yielded is the `as` target, an
    exception in the body is thrown in at the yield, and one the generator does not catch goes
    on (not swallowed)."""

    __slots__ = ("gen",)

    def __init__(self, gen):
        self.gen = gen

    def __enter__(self):
        try:
            return next(self.gen)
        except StopIteration:
            raise RuntimeError("generator didn't yield") from None

    def __exit__(self, typ, value, traceback):
        if typ is None:
            try:
                next(self.gen)
            except StopIteration:
                return False
            raise RuntimeError("generator didn't stop")
        if value is None:
            value = typ()
        try:
            self.gen.throw(value)
        except StopIteration as exc:
            return exc is not value
        except BaseException as exc:
            if exc is value or (isinstance(value, StopIteration) and exc.__cause__ is value):
                exc.__traceback__ = traceback
                return False
            raise
        raise RuntimeError("generator didn't stop after throw()")


def contextmanager(func):
    """contextlib.contextmanager without contextlib (see _GeneratorContext)."""

    def helper(*args, **kwargs):
        return _GeneratorContext(func(*args, **kwargs))

    helper.__name__, helper.__qualname__, helper.__doc__ = func.__name__, func.__qualname__, func.__doc__
    helper.__wrapped__ = func
    return helper


class ContextStack:
    """contextlib.ExitStack's enter_context, without contextlib (a write's start-up: contextlib
    brings collections and functools, ~1.5 ms): the contexts entered are left in reverse order,
    each seeing the exception in flight (or the one a later-left context raised)."""

    def __init__(self) -> None:
        self._exits: list = []

    def __enter__(self) -> ContextStack:
        return self

    def enter_context(self, cm):
        result = cm.__enter__()
        self._exits.append(cm.__exit__)
        return result

    def __exit__(self, *exc) -> bool:
        suppressed = False
        raised: BaseException | None = None
        while self._exits:
            leave = self._exits.pop()
            try:
                if leave(*exc):
                    suppressed, raised, exc = True, None, (None, None, None)
            except BaseException as err:  # noqa: BLE001 - passed to the next context, raised at the end
                if raised is None and exc[1] is not None and err is not exc[1]:
                    err.__context__ = exc[1]
                raised, exc = err, (type(err), err, err.__traceback__)
        if raised is not None:
            raise raised
        return suppressed and exc[0] is None


class Journal:
    """Dry-run mode: changes are recorded instead of made, and reads see them.

    Set with `dry_run()`; every write path of the store goes through this module,
    so one switch covers them all.
    """

    def __init__(self):
        self.files: dict[str, bytes | None] = {}  # path -> pending content (None: removed)
        self.events: list[tuple[str, str, bytes | None, bytes | None]] = []  # (kind, path, old, new)
        self.dirs: set[str] = set()

    def note(self, kind: str, path: str, old: bytes | None = None, new: bytes | None = None) -> None:
        if (kind, path) in {(k, p) for k, p, _, _ in self.events[-50:]} and kind != "write":
            return
        self.events.append((kind, path, old, new))


_journal: Journal | None = None


@contextmanager
def dry_run():
    """Within this block the store changes nothing on disk; yields the Journal of what it would do."""
    global _journal
    saved, _journal = _journal, Journal()
    try:
        yield _journal
    finally:
        _journal = saved


def journal() -> Journal | None:
    return _journal


def make_dir(path: str, mode: int = 0o700, owner: Owner | None = None) -> None:
    """mkdir (raises FileExistsError like os.mkdir); recorded in dry-run mode."""
    if _journal is not None:
        if os.path.isdir(path) or path in _journal.dirs:
            raise FileExistsError(path)
        _journal.dirs.add(path)
        _journal.note("mkdir", path)
        return
    os.mkdir(path, mode)
    if owner is not None:
        owner.apply(path)


def resolves_within(path: str, base: str, *, or_equal: bool = False) -> bool:
    """The real location of `path` is below that of `base`, by whole components (or is it, with
    or_equal): the guard before acting on a path read from a store file, which a symlink or a
    hostile line could point anywhere."""
    real, top = os.path.realpath(path), os.path.realpath(base).rstrip("/")
    return real.startswith(top + "/") or (or_equal and real == top)


class RealPaths:
    """os.path.realpath for the many paths under a few directories (every home of a domain): each
    directory resolved once and remembered, then the last component looked at (one lstat, or none
    when the caller knows it) -- where realpath lstats every component of every path again.  The
    same answers as realpath: a path it cannot take apart plainly ('.', '..', '//', a trailing '/')
    or whose last component is a symlink goes to realpath itself."""

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {}

    def dir(self, path: str) -> str:
        """realpath of a directory that many paths share (remembered: call it for few of them)."""
        real = self._dirs.get(path)
        if real is None:
            real = self._dirs[path] = os.path.realpath(path)
        return real

    def real(self, path: str, is_link: bool | None = None) -> str:
        """realpath(path); `is_link`: whether its last component is a symlink, when the caller has
        lstat'ed it already (None: looked up here)."""
        i = path.rfind("/")
        name = path[i + 1:]
        # taken apart plainly only when absolute and normal: no '//', '/./', '/../', trailing '/'
        if i <= 0 or path[0] != "/" or name in ("", ".", "..") or "//" in path or "/./" in path or "/../" in path:
            return os.path.realpath(path)
        head = path[:i]
        if is_link is None:
            try:
                is_link = stat.S_ISLNK(os.lstat(path).st_mode)
            except OSError:
                is_link = False  # missing: realpath keeps the name as it is
        if is_link:
            return os.path.realpath(path)
        top = self.dir(head)
        return top + name if top.endswith("/") else top + "/" + name


def is_dir(path: str) -> bool:
    return os.path.isdir(path) or (_journal is not None and path in _journal.dirs)


def remove_file(path: str) -> None:
    """unlink (FileNotFoundError when missing); recorded in dry-run mode."""
    if _journal is not None:
        if os.path.islink(path) and path not in _journal.files:  # the link goes, not what it names
            old = os.readlink(path).encode("utf-8", "surrogateescape")
        else:
            old = read_bytes(path)
        if old is None:
            raise FileNotFoundError(path)
        _journal.files[path] = None
        _journal.note("remove", path, old, None)
        return
    os.unlink(path)


def remove_tree(path: str) -> None:
    if _journal is not None:
        _journal.note("remove-tree", path)
        return
    import shutil

    shutil.rmtree(path)


class Owner:
    """Who new files belong to: (uid, gid) applied only when running as root."""

    def __init__(self, uid: int | None = None, gid: int | None = None):
        self.uid, self.gid = uid, gid

    @property
    def active(self) -> bool:
        """chown only as root, and only when it changes something (saves syscalls in bulk adds)."""
        return (self.uid is not None and os.geteuid() == 0
                and (self.uid != 0 or (self.gid is not None and self.gid != os.getegid())))

    def apply(self, path: str, follow: bool = False) -> None:
        if self.active:
            os.chown(path, self.uid, self.gid if self.gid is not None else -1, follow_symlinks=follow)

    def apply_fd(self, fd: int) -> None:
        if self.active:
            os.fchown(fd, self.uid, self.gid if self.gid is not None else -1)


NOBODY = Owner()


def fsync_dir(path: str) -> None:
    if _journal is not None:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_fs(path: str) -> None:
    """Flush the whole filesystem holding `path` (Linux syncfs; os.sync elsewhere): one call
    instead of an fsync per file and per directory when a change writes thousands of files."""
    if _journal is not None:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    except OSError:
        os.sync()
    finally:
        os.close(fd)


def io_error(exc: OSError, path: str) -> StoreIOError:
    return StoreIOError(f"{path}: {os.strerror(exc.errno) if exc.errno else exc}")


def atomic_write(path: str, data: bytes, mode: int = 0o600, owner: Owner = NOBODY, tmp_name: str | None = None) -> None:
    """Replace `path` with `data`: temp file + fsync + rename + directory fsync."""
    tmp = write_staged(path, data, mode, owner, tmp_name)
    if tmp is None:
        return
    try:
        os.rename(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")
    except OSError as exc:
        discard(tmp)
        raise io_error(exc, path) from None


def write_staged(path: str, data: bytes, mode: int = 0o600, owner: Owner = NOBODY,
                 tmp_name: str | None = None, durable: bool = True) -> str | None:
    """Write the next content of `path` to a temp file beside it (fsync'ed) and return its path.

    All the space a change needs is taken here, before its commit: a full disk fails the
    change while the old state is untouched, and what follows the commit is renames.
    In a dry run the write is recorded against `path` and None is returned.  `durable=False`:
    no fsync here; the caller makes it durable later in one `sync_fs` (many small files).
    """
    if _journal is not None:
        _journal.note("write", path, read_bytes(path), data)
        _journal.files[path] = data
        return None
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, tmp_name or f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        # a fresh inode: whatever sits at the temp name (a stale temp file, or a symlink or
        # hard link planted there) is unlinked, never written through
        if os.path.lexists(tmp):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise io_error(exc, path) from None
    try:
        try:
            os.fchmod(fd, mode)
            owner.apply_fd(fd)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        discard(tmp)
        raise io_error(exc, path) from None
    return tmp


def discard(path: str | None) -> None:
    """Remove a staged temp file if it is there (cleanup after a failed change)."""
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def holding(lock_path: str) -> bool:
    """True when this thread already holds the lock (an inner `locked` is a no-op)."""
    return os.path.abspath(lock_path) in _held.__dict__.get("paths", ())


def read_bytes(path: str) -> bytes | None:
    """File contents, or None when it does not exist (pending dry-run content first)."""
    if _journal is not None and path in _journal.files:
        return _journal.files[path]
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


# How long to wait for a busy lock when the caller does not say (seconds).  vpopmail
# retries 10 times 2 s apart before "File busy try again later!".
DEFAULT_LOCK_WAIT = 20.0
# A busy lock is polled (fcntl has no timed wait) at most this far apart: a writer that takes the
# lock again and again (the daemon's group commit, a bulk tool) leaves it free only for a moment
# between its commits, and a waiter polling once a quarter second would rarely see that moment.
LOCK_POLL_MAX = 0.01


_thread_locks: dict[str, _thread.LockType] = {}
_thread_locks_guard = _thread.allocate_lock()
_held = _thread._local()


@contextmanager
def locked(lock_path: str, wait: float | None = None, owner: Owner = NOBODY):
    """Hold an fcntl write lock on `lock_path` (created 0600, never removed).

    fcntl locks belong to the process, so threads of one process (the daemon)
    are also serialised by a per-path thread lock.
    """
    if _journal is not None:  # a dry run neither creates lock files nor waits
        yield
        return
    wait = DEFAULT_LOCK_WAIT if wait is None else wait
    key = os.path.abspath(lock_path)
    held = _held.__dict__.setdefault("paths", set())
    if key in held:  # re-entered by the same thread: closing a second fd would drop the lock
        yield
        return
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(key, _thread.allocate_lock())
    acquired = tlock.acquire(timeout=wait) if wait > 0 else tlock.acquire(blocking=False)
    if not acquired:
        raise LockBusy()
    held.add(key)
    try:
        with _fcntl_locked(lock_path, wait, owner):
            yield
    finally:
        held.discard(key)
        tlock.release()


@contextmanager
def _fcntl_locked(lock_path: str, wait: float, owner: Owner):
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise io_error(exc, lock_path) from None
    try:
        owner.apply_fd(fd)
        deadline = time.monotonic() + wait
        delay = 0.002
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.ENOLCK):
                    raise io_error(exc, lock_path) from None
                if time.monotonic() >= deadline:
                    raise LockBusy() from None
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, LOCK_POLL_MAX)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def overlapped(background, foreground) -> None:
    """background() in a thread while foreground() runs here; both finish before the first
    error (foreground's first) is raised."""

    failed: list[BaseException] = []

    def run() -> None:
        try:
            background()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
            failed.append(exc)

    import threading  # only a big add runs two threads (the lookup path never loads threading)

    t = threading.Thread(target=run, name="vcli-overlapped")
    t.start()
    try:
        foreground()
    finally:
        t.join()
    if failed:
        raise failed[0]


RENAME_THREADS = 4  # renames of many new trees into place; rename(2) releases the GIL


def rename_all(pairs: list[tuple[str, str]]) -> None:
    """rename(src, dst) of each pair, in order when few.  Many at once (a bulk add's trees, a
    domain-wide quota's maildirsize files) are split into contiguous runs -- mostly different
    hashed dirs, so different directory locks -- renamed by a few threads; all are done (the
    commit is past) before the first error is raised."""
    if len(pairs) < 2000:
        for src, dst in pairs:
            os.rename(src, dst)
        return
    from concurrent.futures import ThreadPoolExecutor

    def run(part: list[tuple[str, str]]) -> None:
        for src, dst in part:
            os.rename(src, dst)

    n = -(-len(pairs) // RENAME_THREADS)
    with ThreadPoolExecutor(RENAME_THREADS) as pool:
        futures = [pool.submit(run, pairs[i : i + n]) for i in range(0, len(pairs), n)]
        for f in futures:
            f.result()
