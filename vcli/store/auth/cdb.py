"""The cdb auth module: vpasswd + vpasswd.cdb + .dir-control per domain (spec/store.md §3-§4, §6).

This is vpopmail's vcdb.c: every change of a domain's users rewrites its vpasswd under
`.vpasswd.lock` (temp file + fsync + rename) and rebuilds a byte-identical vpasswd.cdb.

It owns its own commit: a user change and the disk work that goes with it (new trees,
removed homes, the `.dir-control` counter, `.dir_control_free`, maildirsize) form one crash-safe
step with an intent record (vcli/store/intent.py) whose commit point is the rename of vpasswd.
The disk work itself is done by the store's helpers, reached through `self.disk` (the Store):
`_make_user_dirs`, `_stage_maildirsize`, `_remove_tree`.  An SQL module does the same with a
transaction instead (see vcli/store/auth/__init__.py).
"""

from __future__ import annotations

import os
import stat
from _collections_abc import (  # collections.abc without the collections package (start-up)
    Callable,
    Iterable,
    Iterator,
)

from ...errors import CorruptStore, LockBusy, StoreIOError, UserExists, UserNotFound
from ...model import AssignEntry, NewUser, VUser
from .. import cdb, fsutil, intent
from .. import store as _disk
from ..dircontrol import DirControl, place_new_users
from ..fsutil import (
    Owner,
    atomic_write,
    contextmanager,
    discard,
    fsync_dir,
    holding,
    io_error,
    journal,
    read_bytes,
    remove_file,
    rename_all,
    resolves_within,
    write_staged,
)
from ..vpasswd import build_cdb, line_name, parse_line, parse_value, split_lines


class CdbAuth:
    """User records of a cdb site.  `disk` is the Store (warn, lock_wait, settings, disk helpers)."""

    name = "cdb"

    def __init__(self, disk):
        self.disk = disk
        self._checked: dict[str, tuple] = {}  # cdb path -> the (dev, ino, size, mtime) whose header passed

    @property
    def s(self):
        return self.disk.s

    @property
    def warn(self):
        return self.disk.warn

    @property
    def lock_wait(self):
        return self.disk.lock_wait

    def _owner(self, entry: AssignEntry) -> Owner:
        return Owner(entry.uid, entry.gid)

    def _vpasswd(self, entry: AssignEntry) -> str:
        return os.path.join(entry.dir, "vpasswd")

    # --- the AuthModule interface -------------------------------------------------------------

    def get_user(self, entry: AssignEntry, user: str) -> VUser:
        """One user through vpasswd.cdb (never a scan); rebuilt first if stale or corrupt."""
        value = self._cdb_get(entry, user.encode("utf-8", "surrogateescape"))
        if value is None:
            raise UserNotFound()
        try:
            return parse_value(user, value)
        except ValueError:
            raise CorruptStore(f"{entry.dir}/vpasswd.cdb: bad record for {user}") from None

    def list_users(self, entry: AssignEntry) -> Iterator[VUser]:
        """Every user from the vpasswd text file, in file order."""
        self._settle(entry)
        for n, line in enumerate(self._vpasswd_lines(entry), 1):
            try:
                yield parse_line(line)
            except ValueError:
                self.warn(f"Warning: {self._vpasswd(entry)} line {n} is malformed; listing stops there")
                return

    def _vpasswd_lines(self, entry: AssignEntry) -> Iterator[bytes]:
        """vpasswd's lines as split_lines gives them, read as they are used: a listing holds one
        line, not the whole file (100,000 users: 30 MB less).  The open file stays the version
        the listing started on, as every writer replaces vpasswd by a rename."""
        path = self._vpasswd(entry)
        if journal() is not None:  # a dry run reads what it would have written
            yield from split_lines(read_bytes(path) or b"")
            return
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise io_error(exc, path) from None
        with f:
            try:
                for line in f:
                    if b"\r" in line:  # split_lines (bytes.splitlines) also ends a line at a CR
                        yield from line.splitlines(keepends=True)
                    else:
                        yield line
            except OSError as exc:
                raise io_error(exc, path) from None

    def user_count(self, entry: AssignEntry) -> int:
        """cur_users of the domain's `.dir-control` (what vdominfo calls "users")."""
        return self.dir_control(entry).cur_users

    def dir_control(self, entry: AssignEntry) -> DirControl:
        return DirControl.parse(read_bytes(os.path.join(entry.dir, ".dir-control")))

    def lastauth(self, entry: AssignEntry, user: VUser) -> tuple[float, str] | None:
        """(mtime, content) of the user's lastauth file, or None if missing."""
        try:  # os.open, not open(): a listing does this for each of 100,000 users
            fd = os.open(os.path.join(user.dir, "lastauth"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return os.fstat(fd).st_mtime, os.read(fd, 256).decode("latin-1")
        except OSError:
            return None
        finally:
            os.close(fd)

    def set_lastauth(self, entry: AssignEntry, user: VUser, ip: str) -> None:
        """What vchkpw does on a good login: `<home>/lastauth` := the IP (no newline), 0600, owned
        by the domain's owner.  Temp + rename without atomic_write's fsyncs: one per login would
        cost more than the password check, and a record lost in a crash is harmless."""
        path = os.path.join(user.dir, "lastauth")
        tmp = os.path.join(user.dir, f".lastauth.tmp.{os.getpid()}")
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                self._owner(entry).apply_fd(fd)
                os.write(fd, ip.encode("latin-1", "replace"))
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError as exc:
            discard(tmp)
            raise io_error(exc, path) from None

    def create_domain(self, entry: AssignEntry) -> None:
        """Nothing: vpasswd, its cdb and .dir-control appear with the first user (postmaster)."""

    def delete_domain(self, entry: AssignEntry) -> None:
        """The user database part of vdeldomain: the counter (vpasswd goes with the tree)."""
        try:
            remove_file(os.path.join(entry.dir, ".dir-control"))
        except FileNotFoundError:
            pass

    def check_new_domain(self, domain: str, others: list[str]) -> None:
        """Nothing to refuse: a cdb domain's records live in its own directory."""

    def take_domain_dir(self, domains: str, owner: Owner, make: Callable[[str], str]) -> tuple[str, object]:
        """The next hashed domain dir from `domains/.dir-control`, made by `make(hash_dir)` under the
        counter's lock; returns (the dir, (counter bytes written, bytes before)) for an undo."""
        self.disk._makedirs(domains, owner)
        with fsutil.locked(os.path.join(domains, ".dir-control.lock"), self.lock_wait, owner):
            dc_path = os.path.join(domains, ".dir-control")
            dc = DirControl.parse(read_bytes(dc_path))
            ddir = make(dc.next_dir())
            old_dc, new_dc = read_bytes(dc_path), dc.dump()
            try:
                atomic_write(dc_path, new_dc, 0o600, owner, tmp_name=f".dir-control.{os.getpid()}")
            except BaseException:
                if journal() is None:
                    os.rmdir(ddir)
                raise
        return ddir, (new_dc, old_dc)

    def release_domain_dir(self, domains: str, owner: Owner, undo: object = None) -> None:
        """vdeldomain's decrement of `domains/.dir-control`; with `undo` (a failed vadddomain) the
        exact old bytes come back when nobody counted since."""
        dc_path = os.path.join(domains, ".dir-control")
        if not os.path.exists(dc_path):
            return
        with fsutil.locked(os.path.join(domains, ".dir-control.lock"), self.lock_wait, owner):
            now = read_bytes(dc_path)
            if undo and now == undo[0] and undo[1] is None:
                remove_file(dc_path)
            else:
                dc = DirControl.parse(now)
                dc.remove_one()
                data = undo[1] if undo and now == undo[0] else dc.dump()
                atomic_write(dc_path, data, 0o600 if undo else _disk._umask_mode(), owner,
                             tmp_name=f".dir-control.{os.getpid()}")

    def alias_domain_added(self, real: str, alias: str) -> None:
        """Nothing: users/assign is the whole record of an alias domain on cdb."""

    def alias_domains_removed(self, names: list[str]) -> None:
        """Nothing (see alias_domain_added)."""

    def add_users(self, entry: AssignEntry, new_users: list[NewUser], default_quota: str, exist_ok: bool,
                  progress: Callable[[int], None] | None = None) -> list[VUser]:
        """One lock, one vpasswd rewrite, one cdb rebuild: homes from .dir_control_free, else the
        next hashed dir of .dir-control; trees, counter and records in one commit."""
        owner = self._owner(entry)
        created: list[VUser] = []
        with self._domain_lock(entry):
            lines = self._read_lines(entry)
            existing = {line_name(x).decode("utf-8", "surrogateescape") for x in lines}
            todo = []
            for n in new_users:
                if n.user in existing:
                    if exist_ok:
                        continue
                    raise UserExists()
                todo.append(n)
            if not todo:
                return []
            dc_path = os.path.join(entry.dir, ".dir-control")
            dc = DirControl.parse(read_bytes(dc_path))
            free_path = os.path.join(entry.dir, ".dir_control_free")
            free = _disk._read_free(free_path)
            placed, used_free = place_new_users(entry.dir, todo, dc, free, default_quota, 1, self.s.clear_passwords)
            created.extend(placed)
            files = {dc_path: (0o600, dc.dump())}
            with fsutil.ContextStack() as stack:
                if used_free:
                    stack.enter_context(fsutil.locked(free_path + ".lock", self.lock_wait, owner))
                    files[free_path] = (0o644, "".join(x + "\n" for x in free[used_free:]).encode())
                lines = _merge_sorted(lines, [vu.to_line(self.s.clear_passwords) for vu in created])
                self._commit(entry, "vadduser", lines, 0o600, new_users=created, files=files, progress=progress)
        return created

    def modify_user(self, entry: AssignEntry, user: str, change: Callable[[VUser], VUser], mode: int,
                    rebuild_index: bool = True, maildirsize: bool = False) -> VUser:
        """Replace one record (change(old) -> new) under the lock; maildirsize follows a new quota."""
        return self._rewrite_user(entry, user, change, mode, rebuild_index, maildirsize=maildirsize)

    def modify_users(self, entry: AssignEntry, changes: dict[str, Callable[[VUser], VUser]]
                     | Callable[[VUser], VUser], mode: int, rebuild_index: bool = True,
                     maildirsize: bool = False) -> list[VUser]:
        """One lock, one vpasswd rewrite, one cdb rebuild and one intent for a domain-wide
        change; each name's first line is changed, as modify_user of each in turn would.  The
        intent names a few of the lines that differ (PROOF_LINES): vpasswd is replaced whole by
        one rename, so any one of them there proves the change committed -- recording all of
        a 100,000-user domain's wrote 15 MB of JSON (and fsync'ed it) before every such change."""
        with self._domain_lock(entry):
            lines = self._read_lines(entry)
            seen: set[bytes] = set()
            changed: dict[str, bytes] = {}
            new_users: list[VUser] = []
            for i, line in enumerate(lines):
                key = line_name(line)
                if key in seen:
                    continue
                seen.add(key)
                if callable(changes):
                    change = changes
                else:
                    change = changes.get(key.decode("utf-8", "surrogateescape"))
                    if change is None:
                        continue
                new = change(parse_line(line))
                lines[i] = new.to_line(self.s.clear_passwords)
                if lines[i] != line and len(changed) < PROOF_LINES:
                    changed[new.name] = lines[i]
                new_users.append(new)
            if new_users:
                self._commit(entry, "vmoduser", lines, mode, rebuild_cdb=rebuild_index,
                             maildirsize=new_users if maildirsize else (), changed=changed)
            return new_users

    def delete_user(self, entry: AssignEntry, user: str) -> VUser:
        """vdeluser: line out, cdb rebuilt, hash slot freed (.dir_control_free), home removed."""
        gone = self.delete_users(entry, [user])
        if not gone:
            raise UserNotFound()
        return gone[0]

    def delete_users(self, entry: AssignEntry, users: list[str]) -> list[VUser]:
        """vdeluser of each, under one lock with one vpasswd rewrite and one cdb rebuild; the files
        end as deleting them one by one leaves them.  Users not there are skipped."""
        owner = self._owner(entry)
        wanted = {u.encode("utf-8", "surrogateescape") for u in users}
        with self._domain_lock(entry):
            lines = self._read_lines(entry)
            gone = [x for x in lines if line_name(x) in wanted]
            if not gone:
                return []
            old = [parse_line(x) for x in gone]
            lines = [x for x in lines if line_name(x) not in wanted]
            dc_path = os.path.join(entry.dir, ".dir-control")
            dc = DirControl.parse(read_bytes(dc_path))
            prefix = entry.dir.rstrip("/") + "/"
            freed = b""
            for vu in old:
                dc.remove_one()
                parent = os.path.dirname(vu.dir.rstrip("/"))
                if parent.startswith(prefix) and parent[len(prefix):]:
                    freed += parent[len(prefix):].encode() + b"\n"
            files = {dc_path: (0o600, dc.dump())}
            with fsutil.ContextStack() as stack:
                if freed:
                    free_path = os.path.join(entry.dir, ".dir_control_free")
                    stack.enter_context(fsutil.locked(free_path + ".lock", self.lock_wait, owner))
                    files[free_path] = (0o644, (read_bytes(free_path) or b"") + freed)
                self._commit(entry, "vdeluser", lines, 0o600, removed=old, files=files)
        return old

    def rebuild_index(self, entry: AssignEntry) -> str:
        """vmkpasswd: vpasswd.cdb built afresh from vpasswd under the lock (a malformed vpasswd is
        refused, not half indexed); its path."""
        vp = self._vpasswd(entry)
        with self._domain_lock(entry):
            lines = self._read_lines(entry)
            atomic_write(vp + ".cdb", build_cdb(lines), 0o600, self._owner(entry), tmp_name="cdb.tmp")
        return vp + ".cdb"

    # --- vcli convert and vcli check: whole-domain record moves and the counter -----------------

    def import_records(self, entry: AssignEntry, records: list[VUser], dir_control: DirControl | None) -> int:
        """vconvert into cdb: the records merged into vpasswd as they are (their homes exist), the
        cdb rebuilt and `.dir-control` set, in one commit; a name already there -> UserExists."""
        if not records:
            return 0
        with self._domain_lock(entry):
            lines = self._read_lines(entry)
            have = {line_name(x) for x in lines}
            new_lines = [vu.to_line(self.s.clear_passwords) for vu in records]
            names = [line_name(x) for x in new_lines]
            if have & set(names) or len(set(names)) != len(names):
                raise UserExists()
            files = {}
            if dir_control is not None:
                files[os.path.join(entry.dir, ".dir-control")] = (0o600, dir_control.dump())
            # one written line is enough for a replay to tell whether the commit happened
            self._commit(entry, "vconvert", _merge_sorted(lines, new_lines), 0o600, files=files,
                         changed={records[0].name: new_lines[0]})
        return len(records)

    def replace_records(self, entry: AssignEntry, records: Iterable[VUser], dir_control: DirControl | None) -> int:
        """vcli convert into cdb (the whole domain, so a rerun replaces a half run's): the domain's
        vpasswd, vpasswd.cdb and .dir-control become exactly
        these records (sorted by name, as vpopmail's adds keep vpasswd) and this counter (None:
        the counter is left as it is); the homes already exist.  Staged first, then vpasswd renamed in (the commit), then the cdb
        and the counter: a crash leaves the old vpasswd, or the new one with a cdb older than it,
        which every reader rebuilds.  An unchanged file is not rewritten.  Returns the count."""
        owner = self._owner(entry)
        lines = sorted((vu.to_line(self.s.clear_passwords) for vu in records), key=line_name)
        vp = self._vpasswd(entry)
        dc_path = os.path.join(entry.dir, ".dir-control")
        with self._domain_lock(entry):
            data = b"".join(lines)
            old_vp = read_bytes(vp)
            old_dc = read_bytes(dc_path)
            cdb_data = build_cdb(lines)
            staged: list[tuple[str, str]] = []
            try:
                if old_vp != data:
                    mode = stat.S_IMODE(os.stat(vp).st_mode) if old_vp is not None else 0o600
                    staged.append((write_staged(vp, data, mode, owner, f"vpasswd.bak.{os.getpid()}"), vp))
                if old_vp != data or read_bytes(vp + ".cdb") != cdb_data:
                    staged.append((write_staged(vp + ".cdb", cdb_data, 0o600, owner, "cdb.tmp"), vp + ".cdb"))
                if dir_control is not None and (
                        old_dc is None or DirControl.parse(old_dc) != DirControl.parse(dir_control.dump())):
                    staged.append((write_staged(dc_path, dir_control.dump(), 0o600, owner,
                                                f".dir-control.{os.getpid()}"), dc_path))
                for tmp, path in staged:
                    os.rename(tmp, path)
                if staged:
                    fsync_dir(entry.dir)
            except BaseException as exc:
                for tmp, _ in staged:
                    discard(tmp)
                if isinstance(exc, OSError):
                    raise io_error(exc, vp) from None
                raise
        return len(lines)

    def list_lastauth(self, entry: AssignEntry) -> Iterator[tuple[str, int, str]]:
        """(user, time, ip) of every user with a lastauth file (its mtime in whole seconds)."""
        for vu in self.list_users(entry):
            got = self.lastauth(entry, vu)
            if got is not None:
                yield vu.name, int(got[0]), got[1]

    def import_lastauth(self, entry: AssignEntry, rows: Iterable[tuple[str, int, str]]) -> int:
        """vconvert into cdb: each user's `<home>/lastauth` := ip with mtime `time` (a file already
        saying so is left alone, and so is the file of a user the rows do not name: an SQL row
        cannot hold a name over 32 characters); users not in vpasswd are skipped.  Returns the
        files written."""
        wanted = {user: (int(when), ip) for user, when, ip in rows}
        owner = self._owner(entry)
        written = 0
        for vu in self.list_users(entry):
            home = vu.dir
            if not home or not os.path.isdir(home) or not resolves_within(home, entry.dir):
                continue
            path = os.path.join(home, "lastauth")
            want = wanted.get(vu.name)
            try:
                st = os.stat(path)
                with open(path, "rb") as f:
                    have = (int(st.st_mtime), f.read(257).decode("latin-1"))
            except OSError:
                have = None
            if want is None or have == want:
                continue
            tmp = os.path.join(home, f".lastauth.tmp.{os.getpid()}")
            try:
                discard(tmp)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    owner.apply_fd(fd)
                    os.write(fd, want[1].encode("latin-1", "replace"))
                finally:
                    os.close(fd)
                os.utime(tmp, (want[0], want[0]))
                os.rename(tmp, path)
            except OSError as exc:
                discard(tmp)
                raise io_error(exc, path) from None
            written += 1
        return written

    def recount_users(self, entry: AssignEntry) -> tuple[int, int]:
        """vcli check --repair: the .dir-control count set to the number of vpasswd records, under
        the domain lock (the hashing position is left as it is); (was, now)."""
        path = os.path.join(entry.dir, ".dir-control")
        with self._domain_lock(entry):
            fresh = DirControl.parse(read_bytes(path))
            was, fresh.cur_users = fresh.cur_users, len(split_lines(read_bytes(self._vpasswd(entry)) or b""))
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except FileNotFoundError:
                mode = 0o600
            atomic_write(path, fresh.dump(), mode, self._owner(entry), tmp_name=f".dir-control.{os.getpid()}")
        return was, fresh.cur_users

    def domain_counter(self, domains: str, owner: Owner) -> DirControl | None:
        data = read_bytes(os.path.join(domains, ".dir-control"))
        return None if data is None else DirControl.parse(data)

    def set_domain_counter(self, domains: str, owner: Owner, dc: DirControl) -> None:
        """domains/.dir-control := dc under its lock (left alone when it already says so)."""
        path = os.path.join(domains, ".dir-control")
        with fsutil.locked(os.path.join(domains, ".dir-control.lock"), self.lock_wait, owner):
            old = read_bytes(path)
            if old is not None and DirControl.parse(old) == DirControl.parse(dc.dump()):
                return
            atomic_write(path, dc.dump(), 0o600, owner, tmp_name=f".dir-control.{os.getpid()}")

    def existing_users(self, entry: AssignEntry, names: list[str]) -> set[str]:
        """The names the domain has: one index lookup each (as find_user), or for a bulk import's
        thousands one pass over vpasswd, which the index is built from (100,000 lookups: 2 s)."""
        if len(names) < 1000:
            return {n for n in names if self._cdb_get(entry, n.encode("utf-8", "surrogateescape")) is not None}
        self._settle(entry)
        wanted = {n.encode("utf-8", "surrogateescape"): n for n in names}
        return {wanted[k] for k in map(line_name, self._vpasswd_lines(entry)) if k in wanted}

    def stored_domains(self) -> list[str]:
        """Domains the module holds records of outside users/assign: none for cdb (a domain's
        vpasswd lives in its directory, which `vcli check` already walks)."""
        return []

    def close(self) -> None:
        """Nothing to close: every read opens its file and closes it again."""

    # --- cdb internals (vcli check uses domain_lock, replay and replay_outcome) -------------------

    def domain_lock(self, entry: AssignEntry):
        return self._domain_lock(entry)

    def replay(self, entry: AssignEntry) -> bool | None:
        return self._replay(entry)

    def replay_outcome(self, entry: AssignEntry, record: dict, lines: list[bytes] | None = None):
        return self._replay_outcome(entry, record, lines)

    def _settle(self, entry: AssignEntry) -> bool:
        """Before a read: replay a change interrupted by a crash, unless its owner is still at work.
        True when a writer is in the middle of a change (its intent pending, the lock held)."""
        lock = os.path.join(entry.dir, ".vpasswd.lock")
        if not intent.pending(entry.dir):
            return False
        if holding(lock):
            return False
        try:
            with fsutil.locked(lock, 0, self._owner(entry)):
                if intent.pending(entry.dir):
                    self._replay(entry)
        except LockBusy:  # the writer finishes it
            return True
        except (StoreIOError, OSError) as exc:  # a reader can't
            self.warn(f"Warning: {intent.path(entry.dir)}: interrupted change not replayed: {exc}")
        return False

    def _cdb_get(self, entry: AssignEntry, key: bytes) -> bytes | None:
        writing = self._settle(entry)
        vp = self._vpasswd(entry)
        cdb_path = vp + ".cdb"
        try:
            st_cdb = os.stat(cdb_path)
            st_vp = os.stat(vp)
        except FileNotFoundError:
            if not os.path.exists(vp):
                return None
            self._rebuild_cdb(entry, "missing")
            return self._cdb_get_plain(cdb_path, key)
        except OSError as exc:
            raise io_error(exc, cdb_path) from None
        # vpasswd newer than its cdb: stale, rebuilt -- unless a writer is between the rename of
        # vpasswd and that of the cdb it has staged: the old cdb is what every answered request
        # has seen, and waiting for the lock would hold this read up behind the whole commit
        if st_vp.st_mtime_ns > st_cdb.st_mtime_ns and not writing:
            self._rebuild_cdb(entry, "older than vpasswd")
        try:
            return self._cdb_get_plain(cdb_path, key, check=True)
        except ValueError:
            self._rebuild_cdb(entry, "corrupt")
            return self._cdb_get_plain(cdb_path, key)

    def _cdb_get_plain(self, path: str, key: bytes, check: bool = False) -> bytes | None:
        try:
            reader = cdb.CdbReader(path)
        except OSError as exc:
            raise io_error(exc, path) from None
        with reader:
            if check:
                # checked once per version of the file: a bulk import's validation, or a
                # daemon's lookups, read the same cdb thousands of times
                st = os.fstat(reader.fd)
                version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if self._checked.get(path) != version:
                    _check_cdb_header(reader)
                    self._checked[path] = version
            return reader.get(key)

    def _rebuild_cdb(self, entry: AssignEntry, why: str) -> None:
        """Rebuild vpasswd.cdb from vpasswd under the lock (spec §3.5), with a warning."""
        with self._domain_lock(entry):
            vp = self._vpasswd(entry)
            data = read_bytes(vp)
            if data is None:
                return
            st_cdb = _stat(vp + ".cdb")
            st_vp = os.stat(vp)
            if why == "older than vpasswd" and st_cdb and st_cdb.st_mtime_ns >= st_vp.st_mtime_ns:
                return  # someone else rebuilt it meanwhile
            lines = split_lines(data)
            bad = _first_malformed(lines)
            if bad:  # an index of a broken file would be wrong too: keep a stale one, else refuse
                problem = f"{vp} line {bad} is malformed (fewer than 6 colons or no newline)"
                if why == "older than vpasswd":
                    self.warn(f"Warning: {vp}.cdb {why}, not rebuilt: {problem}")
                    return
                raise CorruptStore(problem)
            self.warn(f"Warning: {vp}.cdb {why}; rebuilt from vpasswd")
            atomic_write(vp + ".cdb", build_cdb(lines), 0o600, self._owner(entry), tmp_name="cdb.tmp")

    def _read_lines(self, entry: AssignEntry) -> list[bytes]:
        data = read_bytes(self._vpasswd(entry))
        lines = split_lines(data or b"")
        bad = _first_malformed(lines)
        if bad:
            raise CorruptStore(f"{self._vpasswd(entry)} line {bad} is malformed (fewer than 6 colons or no newline)")
        return lines

    @contextmanager
    def _domain_lock(self, entry: AssignEntry):
        """vpopmail's lock on the domain's vpasswd; an interrupted change found there is replayed."""
        lock = os.path.join(entry.dir, ".vpasswd.lock")
        outer = not holding(lock)
        with fsutil.locked(lock, self.lock_wait, self._owner(entry)):
            if outer and intent.pending(entry.dir):
                self._replay(entry)
            yield

    def _commit(self, entry: AssignEntry, op: str, lines: list[bytes], mode: int, *,
                new_users: list[VUser] = (), removed: list[VUser] = (), files: dict | None = None,
                maildirsize: list[VUser] = (), changed: dict[str, bytes] | None = None, rebuild_cdb: bool = True,
                progress=None) -> None:
        """Make one change of a locked domain crash-safe (see vcli/store/intent.py).

        Everything that takes space is staged first (new trees under temp names, vpasswd,
        the cdb, the small files); a failure there undoes the staging and the old state
        stands.  Renaming vpasswd into place commits; the rest is renames and removals.
        """
        owner = self._owner(entry)
        ddir = entry.dir
        vp = self._vpasswd(entry)
        files = files or {}
        intent.begin(ddir, op, owner, add={vu.name: vu.dir for vu in new_users},
                     remove={vu.name: vu.dir for vu in removed},
                     files={path: f"{os.path.basename(path)}.vcli-new" for path in files},
                     maildirsize=[vu.name for vu in maildirsize], lines=changed)
        staged: list[tuple[str | None, str]] = []  # (temp, final); temp None: dry run, "": remove
        made: list[str] = []
        # many maildirsize files (a domain-wide quota): no fsync each, one sync_fs before the
        # intent ends; until then a crash replays them all from the committed quotas
        batch = len(maildirsize) > 1
        built: dict[str, bytes] = {}

        def build() -> None:  # the new vpasswd and its cdb (pure Python: ~1 s at 100,000 users)
            built["vpasswd"] = b"".join(lines)
            if rebuild_cdb:
                built["cdb"] = build_cdb(lines)

        try:
            if new_users:
                if len(new_users) >= OVERLAP:  # a bulk add: built while the worker processes make the trees
                    fsutil.overlapped(build, lambda: self.disk._make_user_dirs(new_users, owner, made, progress))
                else:
                    self.disk._make_user_dirs(new_users, owner, made, progress)
                parents = {os.path.dirname(h) for h in made}
                if len(parents) > SYNC_FS_OVER:  # a bulk add: one flush, not one per hashed dir
                    fsutil.sync_fs(ddir)
                else:
                    for parent in parents:
                        fsync_dir(parent)
            if not built:
                build()
            # vpasswd is written before its cdb, so the cdb is never older than vpasswd
            vp_tmp = write_staged(vp, built["vpasswd"], mode, owner, f"vpasswd.bak.{os.getpid()}")
            if rebuild_cdb:
                staged.append((write_staged(vp + ".cdb", built["cdb"], 0o600, owner, "cdb.tmp"), vp + ".cdb"))
            for path, (fmode, data) in files.items():
                staged.append((write_staged(path, data, fmode, owner, f"{os.path.basename(path)}.vcli-new"), path))
            seen: dict | None = {} if batch else None
            for vu in maildirsize:
                staged.extend(self.disk._stage_maildirsize(vu, owner, ddir, durable=not batch, seen=seen))
            if vp_tmp is not None:
                os.rename(vp_tmp, vp)  # the commit
                fsync_dir(ddir)
        except BaseException as exc:
            for tmp, _ in staged:
                discard(tmp or None)
            if journal() is None:
                discard(os.path.join(ddir, f"vpasswd.bak.{os.getpid()}"))
                for home in made:
                    _disk._rmtree(intent.tmp_home(home), ignore_errors=True)
                _disk._drop_empty_hash_dirs(ddir, [vu.dir for vu in new_users])
                intent.end(ddir)
            if isinstance(exc, OSError):
                raise io_error(exc, vp) from None
            raise
        try:
            renames = []
            for tmp, path in staged:
                if tmp is None:
                    continue
                if tmp == "":  # NOQUOTA: the file goes
                    discard(path)
                else:
                    renames.append((tmp, path))
            rename_all(renames)
            if journal() is None:  # a dry run built no trees
                _rename_trees(made)
                parents = {os.path.dirname(h) for h in made}
                if batch or len(parents) > SYNC_FS_OVER:
                    fsutil.sync_fs(ddir)
                else:
                    for parent in parents | {os.path.dirname(p) for t, p in staged if t}:
                        fsync_dir(parent)
            for vu in removed:
                self.disk._remove_tree(vu.dir, ddir)
            intent.end(ddir)
        except (OSError, StoreIOError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else exc.message
            late = StoreIOError(f"{vp}: {op} is committed but could not be finished ({why}); "
                                "the next change or `vcli check --repair` finishes it")
            late.committed = True  # the change stands: a caller must not try it again (daemon group commit)
            raise late from None

    def _replay(self, entry: AssignEntry) -> bool | None:
        """Finish or undo a change interrupted in this domain (caller holds the lock); True when
        it was finished, False when undone, None when there was nothing to replay.

        Per user: an added user present in vpasswd with the planned home gets its tree
        renamed in, otherwise the temp tree goes; a removed user absent from vpasswd has
        its home removed.  If anything was committed the staged files are renamed in;
        vpasswd.cdb is rebuilt from vpasswd either way.
        """
        ddir = entry.dir
        record = intent.load(ddir)
        if record is None:
            return None
        owner = self._owner(entry)
        vp = self._vpasswd(entry)
        lines = split_lines(read_bytes(vp) or b"")
        committed, current = self._replay_outcome(entry, record, lines)
        for user, home in record["add"].items():
            tmp = intent.tmp_home(home)
            if not resolves_within(os.path.dirname(tmp), ddir, or_equal=True):
                continue  # never act on a path outside the domain, whatever the record says
            vu = current.get(user)
            if vu is not None and vu.dir == home:
                if os.path.isdir(tmp) and not os.path.lexists(home):
                    os.rename(tmp, home)
                    fsync_dir(os.path.dirname(home))
                elif not os.path.lexists(home):
                    _disk._make_tree(home, owner, _disk._new_maildirsize(vu.quota))
                    os.rename(tmp, home)
            if os.path.isdir(tmp) and not os.path.islink(tmp):
                _disk._rmtree(tmp, ignore_errors=True)
        _disk._drop_empty_hash_dirs(ddir, [h for u, h in record["add"].items() if u not in current])
        for user, home in record["remove"].items():
            if user not in current:
                self.disk._remove_tree(home, ddir)
        for path, tmp_name in record["files"].items():
            tmp = os.path.join(os.path.dirname(path), tmp_name)
            if os.path.dirname(path) != ddir.rstrip("/") or os.path.basename(tmp_name) != tmp_name:
                continue
            if committed and os.path.exists(tmp):
                os.rename(tmp, path)
            else:
                discard(tmp)
        discard(os.path.join(ddir, "cdb.tmp"))
        for user in record["maildirsize"]:
            vu = current.get(user)
            if vu is None:
                continue
            staged = os.path.join(vu.dir, "Maildir", "tmp", intent.MAILDIRSIZE_TMP)
            discard(staged)
            if committed:
                for tmp, path in self.disk._stage_maildirsize(vu, owner, ddir):
                    if tmp == "":
                        discard(path)
                    else:
                        os.rename(tmp, path)
        if _first_malformed(lines) == 0:
            atomic_write(vp + ".cdb", build_cdb(lines), 0o600, owner, tmp_name="cdb.tmp")
        for name in os.listdir(ddir):
            if name.startswith("vpasswd.bak."):
                discard(os.path.join(ddir, name))
        intent.end(ddir)
        how = "finished" if committed else "undone"
        self.warn(f"Note: {how} an {intent.describe(record)} in {entry.real}")
        return committed

    def _replay_outcome(self, entry: AssignEntry, record: dict,
                        lines: list[bytes] | None = None) -> tuple[bool, dict[str, VUser]]:
        """(committed, the record's users now in vpasswd): whether a replay finishes the
        interrupted change (vpasswd shows it) or undoes it.  Reads only, so `vcli check` can say
        which before --repair does it."""
        if lines is None:
            lines = split_lines(read_bytes(self._vpasswd(entry)) or b"")
        wanted = {n.encode("utf-8", "surrogateescape") for key in ("add", "remove") for n in record[key]}
        wanted |= {n.encode("utf-8", "surrogateescape") for n in record["maildirsize"]}
        wanted |= {n.encode("utf-8", "surrogateescape") for n in record["lines"]}
        current: dict[str, VUser] = {}
        raw: dict[str, str] = {}
        for line in lines:
            if line_name(line) in wanted:
                try:
                    vu = parse_line(line)
                except ValueError:
                    continue
                current[vu.name] = vu
                raw[vu.name] = line.decode("utf-8", "surrogateescape")
        # a modification committed if vpasswd holds the lines it wrote
        committed = bool(record["lines"]) and all(raw.get(u) == x for u, x in record["lines"].items())
        for user, home in record["add"].items():
            if not resolves_within(os.path.dirname(intent.tmp_home(home)), entry.dir, or_equal=True):
                continue
            vu = current.get(user)
            if vu is not None and vu.dir == home:
                committed = True
        if any(user not in current for user in record["remove"]):
            committed = True
        return committed, current

    def _rewrite_user(self, entry: AssignEntry, user: str, change: Callable[[VUser], VUser | None], mode: int,
                      rebuild_cdb: bool = True, op: str = "vmoduser",
                      maildirsize: bool = False) -> VUser | None:
        """Replace (or with None, delete) one vpasswd line under the lock."""
        with self._domain_lock(entry):
            lines = self._read_lines(entry)
            key = user.encode("utf-8", "surrogateescape")
            idx = [i for i, x in enumerate(lines) if line_name(x) == key]
            if not idx:
                raise UserNotFound()
            old = parse_line(lines[idx[0]])
            new = change(old)
            if new is None:
                lines = [x for i, x in enumerate(lines) if i not in set(idx)]
            else:
                lines[idx[0]] = new.to_line(self.s.clear_passwords)
            self._commit(entry, op, lines, mode, rebuild_cdb=rebuild_cdb,
                         maildirsize=[new] if maildirsize and new is not None else (),
                         changed={old.name: lines[idx[0]]} if new is not None else None)
            return old if new is None else new


# A change that made trees in more hashed dirs than this flushes the filesystem once (syncfs)
# instead of fsync'ing each directory: at 100,000 users that is ~2,000 fsyncs saved.
OVERLAP = 1000  # new users from which vpasswd and its cdb are built while the trees are made
SYNC_FS_OVER = 16
PROOF_LINES = 8  # changed vpasswd lines a domain-wide change's intent records


def _rename_trees(homes: list[str]) -> None:
    """Each new tree from its temp name to its home (after the commit)."""
    rename_all([(intent.tmp_home(home), home) for home in homes])


def _stat(path: str):
    try:
        return os.stat(path)
    except OSError:
        return None


def _first_malformed(lines: list[bytes]) -> int:
    """Number (1-based) of the first vpasswd line with fewer than 6 colons or no newline; 0 if none."""
    for n, line in enumerate(lines, 1):
        if line.count(b":") < 6 or not line.endswith(b"\n"):
            return n
    return 0


def _check_cdb_header(reader: cdb.CdbReader) -> None:
    """Cheap whole-file sanity check from the 2 KiB header: catches truncation."""
    import struct

    header = os.pread(reader.fd, 2048, 0)
    if len(header) != 2048:
        raise ValueError("truncated")
    end = 2048
    for i in range(256):
        pos, n = struct.unpack_from("<II", header, i * 8)
        if pos < 2048 or pos > reader.size:
            raise ValueError("bad table offset")
        end = max(end, pos + 8 * n)
    if end != reader.size:
        raise ValueError("size mismatch")


def _merge_sorted(lines: list[bytes], new_lines: list[bytes]) -> list[bytes]:
    """Insert each new line before the first line whose name is greater (vpopmail's add).

    A sorted file stays sorted, so inserting many at once is a merge; an unsorted
    file gets vpopmail's one-at-a-time linear insert, giving the same bytes.
    """
    keys = [line_name(x) for x in lines]
    if all(a <= b for a, b in zip(keys, keys[1:], strict=False)):
        merged: list[bytes] = []
        i = 0
        for nl in sorted(new_lines, key=line_name):
            k = line_name(nl)
            while i < len(lines) and keys[i] <= k:
                merged.append(lines[i])
                i += 1
            merged.append(nl)
        merged.extend(lines[i:])
        return merged
    out = list(lines)
    for nl in new_lines:
        k = line_name(nl)
        pos = next((i for i, x in enumerate(out) if line_name(x) > k), len(out))
        out.insert(pos, nl)
    return out
