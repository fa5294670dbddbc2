"""The local vpopmail store: domains, users, quotas, aliases, limits.

All changes to a domain's vpasswd happen under vpopmail's own fcntl lock on
`.vpasswd.lock`, are written through temp file + fsync + rename, and are followed
by a byte-identical rebuild of vpasswd.cdb, so real vpopmail programs and vcli can
work on the same domain at the same time.  Nothing here prints or exits.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from .. import flags as F
from ..backend_common import BackendCommon
from ..config import Settings
from ..errors import (
    AliasExists,
    AliasNotFound,
    BadCharacter,
    CatchallProtected,
    CorruptStore,
    DomainExists,
    IllegalUsername,
    IpAliasDomainsOff,
    LimitsUnreadable,
    LockBusy,
    PasswordChangeDenied,
    StoreIOError,
    StoreMissing,
    TooLong,
    UserDirExists,
    UserExists,
    UserNotFound,
    VpopError,
)
from . import cdb, intent, ipmap, names, quota
from .dircontrol import DirControl
from .fsutil import (
    Owner,
    atomic_write,
    discard,
    fsync_dir,
    holding,
    io_error,
    is_dir,
    journal,
    locked,
    make_dir,
    read_bytes,
    remove_file,
    remove_tree,
    resolves_within,
    write_staged,
)
from .limits import Limits
from .qmail import AssignEntry, QmailFiles, _assign_key
from .vpasswd import MAX_DIR, VUser, build_cdb, line_name, parse_line, parse_value, split_lines

MAX_ALIAS_LINE = 160
# alias names whose .qmail- file is not an alias: `default` is the domain's catch-all (.qmail-default,
# written by vadddomain).  `foo-default` (qmail's extension default of foo-*, ezmlm's list files) stays legal.
RESERVED_ALIASES = frozenset({"default"})


@dataclass
class NewUser:
    """One account to create (add_user / bulk add)."""

    user: str
    password: str | None = None  # clear text
    hashed: str | None = None  # already encrypted (migrations, vadduser -e)
    gecos: str | None = None
    quota: str | None = None  # None: the domain default
    apop: bool = False


@dataclass
class UserChanges:
    """What vmoduser / mod_user may change; None means leave alone."""

    gecos: str | None = None
    password: str | None = None  # clear text, hashed with the site scheme
    hashed: str | None = None
    quota: str | None = None
    clear_flags: bool = False  # -x: gid := 0 before set_flags is OR-ed in
    set_flags: int = 0
    unset_flags: int = 0
    dir: str | None = None


@dataclass
class DomainInfo:
    entry: AssignEntry
    users: int
    aliases: list[str] = field(default_factory=list)


@dataclass
class UserUsage:
    bytes: int
    messages: int
    percent: int | None  # None when the quota is NOQUOTA


class Store(BackendCommon):
    def __init__(self, settings: Settings, warn: Callable[[str], None] | None = None, lock_wait: float | None = None):
        self.s = settings
        self.warn = warn or (lambda msg: None)
        self.lock_wait = lock_wait if lock_wait is not None else settings.lock_wait
        self.qmail = QmailFiles(settings.qmail_dir, self.warn, self.lock_wait)

    # --- paths and small helpers ----------------------------------------------

    @property
    def root(self) -> str:
        return self.s.vpopmail_dir

    @property
    def domains_dir(self) -> str:
        return os.path.join(self.root, "domains")

    def _owner(self, entry: AssignEntry) -> Owner:
        return Owner(entry.uid, entry.gid)

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise StoreMissing(f"Unable to chdir to vpopmail directory: {self.root}")

    def default_domain(self) -> str:
        return names.default_domain(self.root)

    def parse_address(self, address: str) -> tuple[str, str]:
        return names.parse_address(address, self.default_domain(), self.s.max_user)

    # --- domains --------------------------------------------------------------

    def find_domain(self, domain: str) -> AssignEntry | None:
        """The users/cdb entry for a (real or alias) domain, or None."""
        if not domain or "/" in domain or domain.startswith("."):
            return None
        return self.qmail.lookup(domain.lower())

    def list_domains(self) -> list[AssignEntry]:
        path = self.qmail.path("users", "assign")
        if not os.path.exists(path):
            return []
        if not os.access(path, os.R_OK):
            raise VpopError(code=-37)
        return self.qmail.assign_entries()

    def aliases_of(self, real: str) -> list[str]:
        return [e.name for e in self.list_domains() if e.real == real and e.name != real]

    def domain_info(self, domain: str) -> DomainInfo:
        entry = self.domain(domain)
        real = self.real_entry(domain)
        return DomainInfo(entry, self.user_counter(real), self.aliases_of(entry.real))

    def user_counter(self, entry: AssignEntry) -> int:
        """cur_users of the domain's `.dir-control` (what vdominfo calls "users")."""
        data = read_bytes(os.path.join(entry.dir, ".dir-control"))
        return DirControl.parse(data).cur_users

    def add_domain(
        self,
        domain: str,
        password: str | None = None,
        *,
        hashed: str | None = None,
        quota_text: str | None = None,
        catchall: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        base_dir: str | None = None,
        optimize: bool = False,
        postmaster_gecos: str = "Postmaster",
    ) -> AssignEntry:
        """vadddomain: directory, .qmail-default, qmail files, then postmaster."""
        self._check_root()
        domain = names.check_new_domain(domain)
        if self.find_domain(domain):
            raise DomainExists()
        uid = self.s.vpopmail_uid if uid is None else uid
        gid = self.s.vpopmail_gid if gid is None else gid
        owner = Owner(uid, gid)
        base = base_dir or self.root
        domains = os.path.join(base, "domains")
        # postmaster, the limits and the catch-all are checked before anything is made: a refusal
        # must not leave a half-made domain, nor a rewritten counter behind
        no_password = password is None and hashed is None
        pm = self.prepare_user(domain, NewUser("postmaster", password=password, hashed="" if no_password else hashed,
                                               gecos=postmaster_gecos, quota=quota_text))
        self.limits(None)
        if catchall is not None and any(c in catchall for c in "\n\0'"):
            raise BadCharacter()
        if not os.path.isdir(base):  # vpopmail changes into it: a mistyped -d or -u home makes no tree
            raise StoreMissing(f"Unable to chdir to vpopmail directory: {base}")
        try:
            self._makedirs(domains, owner)
            with locked(os.path.join(domains, ".dir-control.lock"), self.lock_wait, owner):
                dc_path = os.path.join(domains, ".dir-control")
                dc = DirControl.parse(read_bytes(dc_path))
                hash_dir = dc.next_dir()
                parent = os.path.join(domains, hash_dir) if hash_dir else domains
                ddir = os.path.join(parent, domain)
                if len(ddir) > MAX_DIR:
                    raise TooLong("dir too long (max=160)", -30)
                self._makedirs(parent, owner)
                try:
                    make_dir(ddir, 0o700, owner)
                except FileExistsError:
                    raise VpopError(code=-14) from None
                old_dc, new_dc = read_bytes(dc_path), dc.dump()
                try:
                    atomic_write(dc_path, new_dc, 0o600, owner, tmp_name=f".dir-control.{os.getpid()}")
                except BaseException:
                    if journal() is None:
                        os.rmdir(ddir)
                    raise
        except OSError as exc:
            raise io_error(exc, domains) from None
        entry = AssignEntry(domain, domain, uid, gid, ddir)
        try:
            atomic_write(os.path.join(ddir, ".qmail-default"), self._qmail_default(ddir, catchall), 0o600, owner)
            self.qmail.add_assign(entry)
            self.qmail.add_rcpthost(domain)
            self.qmail.add_virtualdomain(domain)
            self.qmail.remove_local(domain)
            if not optimize:
                self.qmail.hup_qmail_send()
            self.add_users(domain, [pm], prepared=True)
        except BaseException:
            try:
                if self.find_domain(domain):
                    self.del_domain(domain, force=True, undo_count=(new_dc, old_dc))
                else:  # not registered yet: only the directory and the counter to undo
                    self._remove_tree(ddir, domains)
                    with locked(os.path.join(domains, ".dir-control.lock"), self.lock_wait, owner):
                        now = read_bytes(dc_path)
                        if now == new_dc and old_dc is None:
                            remove_file(dc_path)
                        else:  # the exact old bytes if nobody counted since, else one less
                            dc = DirControl.parse(now)
                            dc.remove_one()
                            atomic_write(dc_path, old_dc if now == new_dc else dc.dump(), 0o600, owner,
                                         tmp_name=f".dir-control.{os.getpid()}")
            except Exception as exc2:  # noqa: BLE001 - report both, keep the first
                self.warn(f"Error: {exc2}")
            raise
        return entry

    def _qmail_default(self, ddir: str, catchall: str | None, action: str | None = None) -> bytes:
        prog = os.path.join(self.root, "bin", "vdelivermail")
        if action is not None:  # no catch-all: 'delete' or 'bounce-no-mailbox'
            target = action
        elif catchall is None:
            target = self.s.qmail_default
        elif "@" in catchall:
            target = catchall
        else:
            target = os.path.join(ddir, catchall)
        if any(c in target for c in "\n\0'"):
            raise BadCharacter()
        return f"| {prog} '' {target}\n".encode()

    def set_catchall(self, domain: str, catchall: str | None, action: str | None = None) -> None:
        """Rewrite .qmail-default: mail to unknown users goes to `catchall` (as vadddomain -e), or
        with `action` ('delete', 'bounce-no-mailbox') nowhere."""
        entry = self.real_entry(domain)
        atomic_write(os.path.join(entry.dir, ".qmail-default"), self._qmail_default(entry.dir, catchall, action),
                     0o600, self._owner(entry))

    def add_alias_domain(self, real: str, alias: str) -> AssignEntry:
        """vaddaliasdomain: one assign line, rcpthosts and virtualdomains; no directory."""
        names.check_domain_chars(alias.lower())
        alias = alias.lower()
        real_entry = self.real_entry(real)
        if self.find_domain(alias):
            raise DomainExists()
        entry = AssignEntry(alias, real_entry.real, real_entry.uid, real_entry.gid, real_entry.dir)
        self.qmail.add_assign(entry)
        self.qmail.add_rcpthost(alias)
        self.qmail.add_virtualdomain(alias)
        self.qmail.remove_local(alias)
        self.qmail.hup_qmail_send()
        return entry

    def del_domain(self, domain: str, force: bool = True, progress: Callable[[int], None] | None = None,
                   undo_count: tuple[bytes, bytes | None] | None = None) -> list[str]:
        """vdeldomain; a real domain takes its aliases with it.  Returns the aliases removed.

        Every directory to be changed is checked writable first, then qmail's files are
        updated (undone again if a later qmail step fails), and only then is the mail
        removed: a failure before that leaves the domain whole.  A symlinked domain
        directory (domains on another disk) loses its target tree and the link.
        `progress` is called with the number of mailboxes removed so far.  `undo_count`
        (what add_domain wrote, what was there before) puts domains/.dir-control back byte
        for byte when a failed vadddomain is undone and nobody counted since."""
        entry = self.domain(domain)
        if entry.is_alias:
            self._check_writable([entry], [])
            self._unregister([entry])
            self.qmail.hup_qmail_send()
            return []
        aliases = [e for e in self.list_domains() if e.real == entry.real and e.name != entry.name]
        if aliases and not force:
            return [a.name for a in aliases]
        ddir = entry.dir.rstrip("/") or entry.dir
        domains = _domains_root(ddir)
        dc_path = os.path.join(domains, ".dir-control")
        target = self._domain_target(ddir)
        dirs = [os.path.dirname(ddir)] + ([os.path.dirname(target)] if target else [])
        if os.path.exists(dc_path):
            dirs.append(domains)
        self._check_writable(aliases + [entry], dirs)
        self._unregister(aliases + [entry])
        self.qmail.hup_qmail_send()
        # qmail no longer knows the domain: from here on only its tree and its count go
        if os.path.isdir(ddir):
            for name in (".qmailadmin-limits", ".dir-control"):
                try:
                    remove_file(os.path.join(ddir, name))
                except FileNotFoundError:
                    pass
        if target:
            self._remove_tree(target, os.path.dirname(target), progress)
            remove_file(ddir)
        else:
            self._remove_tree(ddir, domains, progress)
        if os.path.exists(dc_path):
            with locked(os.path.join(domains, ".dir-control.lock"), self.lock_wait, self._owner(entry)):
                now = read_bytes(dc_path)
                if undo_count and now == undo_count[0] and undo_count[1] is None:
                    remove_file(dc_path)
                else:
                    dc = DirControl.parse(now)
                    dc.remove_one()
                    data = undo_count[1] if undo_count and now == undo_count[0] else dc.dump()
                    atomic_write(dc_path, data, 0o600 if undo_count else _umask_mode(), self._owner(entry),
                                 tmp_name=f".dir-control.{os.getpid()}")
        return [a.name for a in aliases]

    def _domain_target(self, ddir: str) -> str | None:
        """Where a symlinked domain directory really is (None when it is no symlink).

        The target tree is removed with the link, so a link to a directory holding the store
        itself (or to /) is refused rather than followed."""
        if not os.path.islink(ddir):
            return None
        target = os.path.realpath(ddir)
        if not os.path.isdir(target):
            return None  # a dangling link: only the link goes
        for keep in (self.root, self.qmail.dir, _domains_root(ddir)):
            real = os.path.realpath(keep)
            if real == target or real.startswith(target.rstrip("/") + "/"):
                raise StoreIOError(f"{ddir}: links to {target}, which holds {keep}; not removing it")
        return target

    def _check_writable(self, entries: list[AssignEntry], dirs: list[str]) -> None:
        """Before vdeldomain changes anything: the directories of the qmail files it will change
        (those listing the domains), their lock files and `dirs` must be writable (access(2) also
        sees a read-only mount), else exit 74 with nothing changed."""
        q = self.qmail
        files = set()
        hosts = {"rcpthosts": (read_bytes(q.path("control", "rcpthosts")) or b"").split(),
                 "morercpthosts": (read_bytes(q.path("control", "morercpthosts")) or b"").split()}
        vds = (read_bytes(q.path("control", "virtualdomains")) or b"").split()
        assign = (read_bytes(q.path("users", "assign")) or b"").splitlines(keepends=True)
        for e in entries:
            files |= {q.path("control", name) for name, lines in hosts.items() if e.name.encode() in lines}
            if f"{e.name}:{e.name}".encode() in vds:
                files.add(q.path("control", "virtualdomains"))
            if e.line() in assign:
                files |= {q.path("users", "assign"), q.path("users", "cdb")}
        need = [os.path.dirname(f) for f in sorted(files)] + dirs
        need += [f + ".lock" for f in sorted(files) if os.path.exists(f + ".lock")]
        for path in need:
            if os.path.exists(path) and not os.access(path, os.W_OK | (os.X_OK if os.path.isdir(path) else 0)):
                err = os.strerror(errno.EROFS if _read_only_fs(path) else errno.EACCES)
                raise StoreIOError(f"{path}: {err}; nothing was removed")

    def _unregister(self, entries: list[AssignEntry]) -> None:
        """Take the domains out of users/assign (+ users/cdb), rcpthosts/morercpthosts and
        virtualdomains; a failure puts back what was taken out (as vadddomain's rollback does)."""
        q = self.qmail
        assign = q.path("users", "assign")
        undo: list[Callable[[], None]] = []
        try:
            for e in entries:
                hosts = (read_bytes(q.path("control", "rcpthosts")) or b"") + b"\n" + (
                    read_bytes(q.path("control", "morercpthosts")) or b"")
                if e.name.encode() in hosts.split():
                    q.remove_rcpthost(e.name)
                    undo.append(lambda e=e: q.add_rcpthost(e.name))
                vd = f"{e.name}:{e.name}".encode()
                if vd in (read_bytes(q.path("control", "virtualdomains")) or b"").split():
                    q.remove_virtualdomain(e.name)
                    undo.append(lambda e=e: q.add_virtualdomain(e.name))
                if e.line() in (read_bytes(assign) or b"").splitlines(keepends=True):
                    q._remove_lines(assign, {e.line()})
                    undo.append(lambda e=e: q._insert_sorted(assign, e.line(), _assign_key, before_dot=True))
            q.compile_assign()  # also when the lines were missing: a stale users/cdb must not keep the domain
        except BaseException as first:
            for step in [*reversed(undo), q.compile_assign] if undo else []:
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - report, keep undoing, keep the first error
                    if str(exc) != str(first):
                        self.warn(f"Error: {exc}")
            raise

    # --- limits ---------------------------------------------------------------

    def limits_path(self, entry: AssignEntry) -> str:
        return os.path.join(entry.dir, ".qmailadmin-limits")

    def default_limits_path(self) -> str:
        return os.path.join(self.root, "etc", "vlimits.default")

    def limits(self, domain: str | None) -> Limits:
        """The domain's limits, else vlimits.default; neither readable -> LimitsUnreadable."""
        if domain is not None:
            entry = self.real_entry(domain)
            data = read_bytes(self.limits_path(entry))
            if data is not None:
                return Limits.parse(data)
        data = read_bytes(self.default_limits_path())
        if data is None:
            raise LimitsUnreadable()
        return Limits.parse(data)

    def set_limits(self, domain: str | None, lim: Limits) -> None:
        if domain is None:
            atomic_write(self.default_limits_path(), lim.dump(), 0o644)
            return
        entry = self.real_entry(domain)
        atomic_write(self.limits_path(entry), lim.dump(), 0o600, self._owner(entry))

    def del_limits(self, domain: str) -> None:
        entry = self.real_entry(domain)
        try:
            remove_file(self.limits_path(entry))
        except FileNotFoundError:
            pass

    def domain_mask(self, domain: str) -> int | None:
        try:
            return self.limits(domain).flag_mask()
        except (LimitsUnreadable, OSError):
            return None

    # --- reading users ----------------------------------------------------------

    def _vpasswd(self, entry: AssignEntry) -> str:
        return os.path.join(entry.dir, "vpasswd")

    def get_user(self, user: str, domain: str) -> VUser:
        """One user through vpasswd.cdb (never a scan); rebuilt first if stale or corrupt."""
        entry = self.real_entry(domain)
        user = user.lower()
        value = self._cdb_get(entry, user.encode("utf-8", "surrogateescape"))
        if value is None:
            raise UserNotFound()
        try:
            return parse_value(user, value)
        except ValueError:
            raise CorruptStore(f"{entry.dir}/vpasswd.cdb: bad record for {user}") from None

    def _settle(self, entry: AssignEntry) -> None:
        """Before a read: replay a change interrupted by a crash, unless its owner is still at work."""
        lock = os.path.join(entry.dir, ".vpasswd.lock")
        if not intent.pending(entry.dir) or holding(lock):
            return
        try:
            with locked(lock, 0, self._owner(entry)):
                if intent.pending(entry.dir):
                    self._replay(entry)
        except (LockBusy, StoreIOError, OSError) as exc:  # busy: the writer finishes it; else a reader can't
            if not isinstance(exc, LockBusy):
                self.warn(f"Warning: {intent.path(entry.dir)}: interrupted change not replayed: {exc}")

    def _cdb_get(self, entry: AssignEntry, key: bytes) -> bytes | None:
        self._settle(entry)
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
        if st_vp.st_mtime_ns > st_cdb.st_mtime_ns:
            self._rebuild_cdb(entry, "older than vpasswd")
        try:
            return self._cdb_get_plain(cdb_path, key, check=True)
        except ValueError:
            self._rebuild_cdb(entry, "corrupt")
            return self._cdb_get_plain(cdb_path, key)

    @staticmethod
    def _cdb_get_plain(path: str, key: bytes, check: bool = False) -> bytes | None:
        try:
            reader = cdb.CdbReader(path)
        except OSError as exc:
            raise io_error(exc, path) from None
        with reader:
            if check:
                _check_cdb_header(reader)
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

    def list_users(self, domain: str) -> Iterator[VUser]:
        """Every user from the vpasswd text file, in file order."""
        entry = self.real_entry(domain)
        self._settle(entry)
        try:
            data = read_bytes(self._vpasswd(entry)) or b""
        except OSError as exc:
            raise io_error(exc, self._vpasswd(entry)) from None
        for n, line in enumerate(split_lines(data), 1):
            try:
                yield parse_line(line)
            except ValueError:
                self.warn(f"Warning: {self._vpasswd(entry)} line {n} is malformed; listing stops there")
                return

    def rebuild_cdb(self, domain: str) -> str:
        """vmkpasswd: vpasswd.cdb built afresh from vpasswd under the domain lock; its path."""
        entry = self.real_entry(domain)
        vp = self._vpasswd(entry)
        with self._domain_lock(entry):
            lines = self._read_lines(entry)  # a malformed vpasswd is refused, not half indexed
            atomic_write(vp + ".cdb", build_cdb(lines), 0o600, self._owner(entry), tmp_name="cdb.tmp")
        return vp + ".cdb"

    def user_usage(self, user: VUser) -> UserUsage:
        used_bytes, used_count = quota.usage(os.path.join(user.dir, "Maildir"))
        pct = None if user.quota == "NOQUOTA" else quota.percent(user.quota, used_bytes, used_count)
        return UserUsage(used_bytes, used_count, pct)

    def lastauth(self, user: VUser) -> tuple[float, str] | None:
        """(mtime, content) of the user's lastauth file, or None if missing."""
        path = os.path.join(user.dir, "lastauth")
        try:
            with open(path, "rb") as f:
                content = f.read(256).decode("latin-1")
                return os.fstat(f.fileno()).st_mtime, content
        except OSError:
            return None

    def set_lastauth(self, user: VUser, domain: str, ip: str) -> None:
        """vchkpw's record of a successful login: `lastauth` = the client IP (no newline), 0600,
        owned by the domain's owner; its mtime is the login time (store.md §7)."""
        if any(c in ip for c in "\0\n\r/") or len(ip) > 64:
            ip = "0.0.0.0"
        path = os.path.join(user.dir, "lastauth")
        owner = self._owner(self.real_entry(domain))
        # temp + rename, without atomic_write's fsyncs: one per login would cost more than the
        # check itself, and a record lost in a crash is harmless
        tmp = os.path.join(user.dir, f".lastauth.tmp.{os.getpid()}")
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                owner.apply_fd(fd)
                os.write(fd, ip.encode("ascii", "replace"))
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError as exc:
            discard(tmp)
            raise io_error(exc, path) from None

    # --- writing users ----------------------------------------------------------

    def _read_lines(self, entry: AssignEntry) -> list[bytes]:
        data = read_bytes(self._vpasswd(entry))
        lines = split_lines(data or b"")
        bad = _first_malformed(lines)
        if bad:
            raise CorruptStore(f"{self._vpasswd(entry)} line {bad} is malformed (fewer than 6 colons or no newline)")
        return lines

    def _write_vpasswd(self, entry: AssignEntry, lines: list[bytes], mode: int) -> None:
        owner = self._owner(entry)
        vp = self._vpasswd(entry)
        atomic_write(vp, b"".join(lines), mode, owner, tmp_name=f"vpasswd.bak.{os.getpid()}")
        atomic_write(vp + ".cdb", build_cdb(lines), 0o600, owner, tmp_name="cdb.tmp")

    # --- committing a change: intent, staging, vpasswd rename, finish ---------------

    @contextmanager
    def _domain_lock(self, entry: AssignEntry):
        """vpopmail's lock on the domain's vpasswd; an interrupted change found there is replayed."""
        lock = os.path.join(entry.dir, ".vpasswd.lock")
        outer = not holding(lock)
        with locked(lock, self.lock_wait, self._owner(entry)):
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
        try:
            if new_users:
                self._make_user_dirs(new_users, owner, made, progress)
                for parent in {os.path.dirname(h) for h in made}:
                    fsync_dir(parent)
            # vpasswd is written before its cdb, so the cdb is never older than vpasswd
            vp_tmp = write_staged(vp, b"".join(lines), mode, owner, f"vpasswd.bak.{os.getpid()}")
            if rebuild_cdb:
                staged.append((write_staged(vp + ".cdb", build_cdb(lines), 0o600, owner, "cdb.tmp"), vp + ".cdb"))
            for path, (fmode, data) in files.items():
                staged.append((write_staged(path, data, fmode, owner, f"{os.path.basename(path)}.vcli-new"), path))
            for vu in maildirsize:
                staged.extend(self._stage_maildirsize(vu, owner, ddir))
            if vp_tmp is not None:
                os.rename(vp_tmp, vp)  # the commit
                fsync_dir(ddir)
        except BaseException as exc:
            for tmp, _ in staged:
                discard(tmp or None)
            if journal() is None:
                discard(os.path.join(ddir, f"vpasswd.bak.{os.getpid()}"))
                for home in made:
                    _rmtree(intent.tmp_home(home), ignore_errors=True)
                _drop_empty_hash_dirs(ddir, [vu.dir for vu in new_users])
                intent.end(ddir)
            if isinstance(exc, OSError):
                raise io_error(exc, vp) from None
            raise
        try:
            for tmp, path in staged:
                if tmp is None:
                    continue
                if tmp == "":  # NOQUOTA: the file goes
                    discard(path)
                else:
                    os.rename(tmp, path)
            if journal() is None:  # a dry run built no trees
                for home in made:
                    os.rename(intent.tmp_home(home), home)
                for parent in {os.path.dirname(h) for h in made} | {os.path.dirname(p) for t, p in staged if t}:
                    fsync_dir(parent)
            for vu in removed:
                self._remove_tree(vu.dir, ddir)
            intent.end(ddir)
        except (OSError, StoreIOError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else exc.message
            raise StoreIOError(f"{vp}: {op} is committed but could not be finished ({why}); "
                               "the next change or `vcli check --repair` finishes it") from None

    def _stage_maildirsize(self, vu: VUser, owner: Owner, ddir: str) -> list[tuple[str | None, str]]:
        """maildirsize follows a new quota: staged in Maildir/tmp, or (NOQUOTA, tmp "") removed at the commit.

        Never through a symlink out of the domain: a home or Maildir leading elsewhere is left alone."""
        maildir = os.path.join(vu.dir, "Maildir")
        path = os.path.join(maildir, "maildirsize")
        if os.path.lexists(maildir) and not resolves_within(maildir, ddir):
            self.warn(f"Warning: not updating {path}: the Maildir leads outside {ddir}")
            return []
        if vu.quota in ("NOQUOTA", ""):
            if journal() is not None:
                try:
                    remove_file(path)
                except FileNotFoundError:
                    pass
                return []
            return [("", path)] if os.path.lexists(path) else []
        if not is_dir(maildir) or not os.path.isdir(os.path.join(maildir, "tmp")):
            return []
        used_bytes, used_count = quota.usage(maildir)
        tmp_name = os.path.join("tmp", intent.MAILDIRSIZE_TMP)
        data = quota.maildirsize_bytes(vu.quota, used_bytes, used_count)
        return [(write_staged(path, data, 0o600, owner, tmp_name), path)]

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
                    _make_tree(home, owner, _new_maildirsize(vu.quota))
                    os.rename(tmp, home)
            if os.path.isdir(tmp) and not os.path.islink(tmp):
                _rmtree(tmp, ignore_errors=True)
        _drop_empty_hash_dirs(ddir, [h for u, h in record["add"].items() if u not in current])
        for user, home in record["remove"].items():
            if user not in current:
                self._remove_tree(home, ddir)
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
                for tmp, path in self._stage_maildirsize(vu, owner, ddir):
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

    def _check_gecos(self, gecos: str) -> str:
        if ":" in gecos or any(c in gecos for c in "\0\n\r"):
            raise BadCharacter()
        if len(gecos) > self.s.max_gecos:
            raise TooLong(f"gecos too long (max={self.s.max_gecos})", -28)
        return gecos

    def _default_quota(self, domain: str) -> str:
        lim = self.limits(domain)
        if lim.default_quota and lim.default_maxmsgcount:
            return f"{lim.default_quota}S,{lim.default_maxmsgcount}C"
        if lim.default_quota:
            return f"{lim.default_quota}S"
        if lim.default_maxmsgcount:
            return f"{lim.default_maxmsgcount}C"
        return "NOQUOTA"

    def prepare_user(self, domain: str, new: NewUser, policy=None) -> NewUser:
        """Validate one new account and hash its password (no store access, no lock)."""
        user = names.check_new_user(new.user.lower(), self.s.max_user)
        gecos = self._check_gecos(user if new.gecos is None else new.gecos)
        hashed = new.hashed
        if hashed is None:
            clear = new.password or ""
            _passwords().check_clear(clear)
            (policy or _passwords().Policy.load(self.root)).check(clear)
            hashed = _passwords().hash_password(clear, self.s.hash)
        else:
            _passwords().check_hash(hashed)
        q = None if new.quota is None else quota.normalize(new.quota)
        clear = new.password if (self.s.clear_passwords and new.hashed is None) else None
        if clear is not None and ":" in clear:
            raise BadCharacter()
        return NewUser(user, clear, hashed, gecos, q, new.apop)

    def add_users(
        self,
        domain: str,
        new_users: Iterable[NewUser],
        prepared: bool = False,
        exist_ok: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[VUser]:
        """Create accounts under one lock with one vpasswd rewrite and one cdb rebuild.

        The result is byte-identical (hashes aside) to adding them one by one.
        """
        self._check_root()
        entry = self.real_entry(domain)
        domain = entry.real
        if not prepared:
            policy = _passwords().Policy.load(self.root)
            new_users = [self.prepare_user(domain, n, policy) for n in new_users]
        else:
            new_users = list(new_users)
        seen: set[str] = set()
        for n in new_users:
            if n.user in seen:
                raise UserExists(f"User already exists: {n.user}@{domain}")
            seen.add(n.user)
        default_q = self._default_quota(domain)
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
            free = _read_free(free_path)
            used_free = 0
            for n in todo:
                if used_free < len(free):
                    hash_dir = free[used_free]
                    used_free += 1
                    if dc.cur_users:
                        dc.cur_users += 1
                else:
                    hash_dir = dc.next_dir()
                parent = os.path.join(entry.dir, hash_dir) if hash_dir else entry.dir
                home = os.path.join(parent, n.user)
                if len(home) > MAX_DIR:
                    raise TooLong("dir too long (max=160)", -30)
                q = default_q if n.quota is None else n.quota
                created.append(VUser(n.user, n.hashed or "", "2" if n.apop else "1", 0, n.gecos or n.user, home,
                                     q, n.password if self.s.clear_passwords else None))
            files = {dc_path: (0o600, dc.dump())}
            with ExitStack() as stack:
                if used_free:
                    stack.enter_context(locked(free_path + ".lock", self.lock_wait, owner))
                    files[free_path] = (0o644, "".join(x + "\n" for x in free[used_free:]).encode())
                lines = _merge_sorted(lines, [vu.to_line(self.s.clear_passwords) for vu in created])
                self._commit(entry, "vadduser", lines, 0o600, new_users=created, files=files, progress=progress)
        return created

    def _makedirs(self, path: str, owner: Owner) -> None:
        if is_dir(path):
            return
        parent = os.path.dirname(path)
        if parent and parent != path:
            self._makedirs(parent, owner)
        try:
            make_dir(path, 0o700, owner)
        except FileExistsError:
            pass

    def _make_user_dirs(self, users: list[VUser], owner: Owner, made: list[str], progress=None) -> None:
        """Build the users' trees under their temp names; `made` collects the homes built.

        mkdir dominates a bulk import (five directories a user, ~40 us each on ext4), and
        directories in different parents can be made concurrently, so large batches use
        worker processes (threads would fight over the GIL between syscalls).
        """
        for parent in sorted({os.path.dirname(vu.dir) for vu in users}):
            self._makedirs(parent, owner)
        jobs = [(vu.dir, _new_maildirsize(vu.quota)) for vu in users]
        if len(users) < 200 or journal() is not None:
            for i, (home, mds) in enumerate(jobs, 1):
                _make_tree(home, owner, mds)
                made.append(home)
                if progress:
                    progress(i)
            return
        from concurrent.futures import ProcessPoolExecutor

        size = 500
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        error: BaseException | None = None
        done = 0
        with ProcessPoolExecutor(4, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
            for ok, exc in pool.map(_make_trees, chunks, [(owner.uid, owner.gid, owner.active)] * len(chunks)):
                made.extend(ok)
                done += len(ok)
                if exc is not None and error is None:
                    error = exc
                if progress and error is None:
                    progress(done)
        if error is not None:
            raise error

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

    def mod_user(self, user: str, domain: str, ch: UserChanges, rebuild_cdb: bool = True,
                 enforce_no_passwd_chng: bool = False) -> VUser:
        """vmoduser / mod_user on one account; returns the new record."""
        entry = self.real_entry(domain)
        user = user.lower()
        if ch.gecos is not None:
            self._check_gecos(ch.gecos)
        hashed = None
        if ch.password is not None:
            _passwords().check_clear(ch.password)
            if self.s.clear_passwords and ":" in ch.password:
                raise BadCharacter()
            hashed = _passwords().hash_password(ch.password, self.s.hash)
        if ch.hashed is not None:
            _passwords().check_hash(ch.hashed)
        q = None if ch.quota is None else quota.normalize(ch.quota)
        if ch.dir is not None and (len(ch.dir) > MAX_DIR or any(c in ch.dir for c in ":\0\n\r")):
            raise TooLong("dir too long (max=160)", -30) if len(ch.dir) > MAX_DIR else BadCharacter()
        mask = self.domain_mask(entry.real) if enforce_no_passwd_chng else None

        def change(u: VUser) -> VUser:
            if enforce_no_passwd_chng and ch.password is not None and (
                self.effective_flags(u, entry.real, mask) & F.NO_PASSWD_CHNG
            ):
                raise PasswordChangeDenied()
            if ch.gecos is not None:
                u.gecos = ch.gecos
            if hashed is not None:
                u.passwd = hashed
                if self.s.clear_passwords:
                    u.clear = ch.password
            elif ch.hashed is not None:
                u.passwd = ch.hashed
            if ch.clear_flags:
                u.gid = 0
            u.gid = (u.gid | ch.set_flags) & ~ch.unset_flags
            if q is not None:
                u.quota = q
            if ch.dir is not None:
                u.dir = ch.dir
            return u

        return self._rewrite_user(entry, user, change, _umask_mode(), rebuild_cdb, maildirsize=q is not None)

    def set_password(self, user: str, domain: str, clear: str, check_policy: bool = True,
                     enforce_no_passwd_chng: bool = True) -> VUser:
        """vpasswd: new hash (policy checked), refused under NO_PASSWD_CHNG."""
        _passwords().check_clear(clear)
        if check_policy:
            _passwords().Policy.load(self.root).check(clear)
        return self.mod_user(user, domain, UserChanges(password=clear), enforce_no_passwd_chng=enforce_no_passwd_chng)

    def del_user(self, user: str, domain: str) -> VUser:
        """vdeluser: line out, cdb rebuilt, hash slot freed, home removed."""
        entry = self.real_entry(domain)
        user = user.lower()
        if self._catchall_user(entry) == user:
            raise CatchallProtected()
        owner = self._owner(entry)
        with self._domain_lock(entry):
            lines = self._read_lines(entry)
            key = user.encode("utf-8", "surrogateescape")
            found = [x for x in lines if line_name(x) == key]
            if not found:
                raise UserNotFound()
            old = parse_line(found[0])
            lines = [x for x in lines if line_name(x) != key]
            dc_path = os.path.join(entry.dir, ".dir-control")
            dc = DirControl.parse(read_bytes(dc_path))
            dc.remove_one()
            files = {dc_path: (0o600, dc.dump())}
            parent = os.path.dirname(old.dir.rstrip("/"))
            prefix = entry.dir.rstrip("/") + "/"
            with ExitStack() as stack:
                if parent.startswith(prefix) and parent[len(prefix):]:
                    free_path = os.path.join(entry.dir, ".dir_control_free")
                    stack.enter_context(locked(free_path + ".lock", self.lock_wait, owner))
                    files[free_path] = (0o644, (read_bytes(free_path) or b"") + parent[len(prefix):].encode() + b"\n")
                self._commit(entry, "vdeluser", lines, 0o600, removed=[old], files=files)
        return old

    def del_users(self, domain: str, users: list[str]) -> list[VUser]:
        """Many vdelusers under one lock with one vpasswd rewrite and one cdb rebuild (vdeloldusers on
        a big domain: one del_user each would rewrite the whole vpasswd and cdb per user).  The files
        end as deleting them one by one leaves them; users not there are skipped."""
        entry = self.real_entry(domain)
        catchall = self._catchall_user(entry)
        wanted = {u.lower() for u in users}
        if catchall in wanted:
            raise CatchallProtected()
        owner = self._owner(entry)
        with self._domain_lock(entry):
            lines = self._read_lines(entry)
            gone = [x for x in lines if line_name(x).decode("utf-8", "surrogateescape") in wanted]
            if not gone:
                return []
            old = [parse_line(x) for x in gone]
            keep = set(map(id, gone))
            lines = [x for x in lines if id(x) not in keep]
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
            with ExitStack() as stack:
                if freed:
                    free_path = os.path.join(entry.dir, ".dir_control_free")
                    stack.enter_context(locked(free_path + ".lock", self.lock_wait, owner))
                    files[free_path] = (0o644, (read_bytes(free_path) or b"") + freed)
                self._commit(entry, "vdeluser", lines, 0o600, removed=old, files=files)
        return old

    def _catchall_user(self, entry: AssignEntry) -> str | None:
        """The local mailbox named by .qmail-default, which vdeluser refuses to delete."""
        data = read_bytes(os.path.join(entry.dir, ".qmail-default"))
        if not data:
            return None
        first = data.split(b"\n", 1)[0].decode("latin-1")
        if "vdelivermail" not in first or "''" not in first:
            return None
        word = first.split("''", 1)[1].strip()
        if word in ("bounce-no-mailbox", "delete-no-mailbox", "delete", ""):
            return None
        if word.startswith("/"):
            if entry.dir in word:
                return os.path.basename(word.rstrip("/"))
            return None
        if "@" in word:
            u, _, d = word.partition("@")
            return u.lower() if d.lower() in (entry.real, entry.name) else None
        return None

    def _remove_tree(self, path: str, must_be_under: str, progress: Callable[[int], None] | None = None) -> None:
        """Delete a user or domain directory, never following a symlink out of the store."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            remove_file(path)  # a symlinked home loses only the link (del_domain handles a symlinked domain)
            return
        if not resolves_within(path, must_be_under):
            self.warn(f"Warning: not removing {path}: outside {must_be_under}")
            return
        try:
            if progress and journal() is None:  # a big domain: mailbox by mailbox, counting
                done = 0
                for entry in list(os.scandir(path)):
                    if entry.is_dir(follow_symlinks=False):
                        remove_tree(entry.path)
                        done += 1
                        progress(done)
            remove_tree(path)  # rmtree does not follow symlinks inside the tree
        except OSError as exc:
            raise StoreIOError(f"could not remove {path}: {exc.strerror}") from None
        fsync_dir(os.path.dirname(path))

    # --- aliases (.qmail-<alias> files) ------------------------------------------

    def _alias_path(self, entry: AssignEntry, alias: str) -> str:
        alias = alias.lower()
        if not alias or "/" in alias or alias.startswith(".") or any(c in alias for c in "\0\n\r"):
            raise IllegalUsername()
        if alias in RESERVED_ALIASES:
            raise IllegalUsername(f"alias name {alias} is reserved: .qmail-{alias} is the domain's catch-all, "
                                  "not an alias")
        if ":" in alias:  # `a:b` and `a.b` would both be .qmail-a:b
            raise IllegalUsername(f"alias name {alias} is illegal: ':' would collide with the alias "
                                  f"{alias.replace(':', '.')}")
        return os.path.join(entry.dir, ".qmail-" + alias.replace(".", ":"))

    def _alias_lock(self, entry: AssignEntry):
        """Alias edits serialise on the domain's .vpasswd.lock: a `.qmail-x.lock` would itself be an alias."""
        return locked(os.path.join(entry.dir, ".vpasswd.lock"), self.lock_wait, self._owner(entry))

    def alias_names(self, domain: str) -> list[str]:
        entry = self.real_entry(domain)
        out = []
        try:
            items = list(os.scandir(entry.dir))
        except OSError as exc:
            raise io_error(exc, entry.dir) from None
        for it in items:
            if not it.name.startswith(".qmail-") or it.name == ".qmail-default":
                continue
            if it.is_symlink() and ("-default" in it.name or "-owner" in it.name):
                continue
            out.append(it.name[len(".qmail-"):].replace(":", "."))
        return sorted(out, key=str.lower)

    def alias_lines(self, domain: str, alias: str) -> list[str] | None:
        """Lines of one alias, or None when it does not exist."""
        entry = self.real_entry(domain)
        data = read_bytes(self._alias_path(entry, alias))
        if data is None:
            return None
        return data.decode("utf-8", "surrogateescape").splitlines()

    def list_aliases(self, domain: str) -> list[tuple[str, list[str]]]:
        return [(a, self.alias_lines(domain, a) or []) for a in self.alias_names(domain)]

    def add_alias_line(self, domain: str, alias: str, line: str, allow_duplicate: bool = False) -> None:
        entry = self.real_entry(domain)
        path = self._alias_path(entry, alias)
        if any(c in line for c in "\0\n\r") or not line:
            raise BadCharacter()
        if len(line) >= MAX_ALIAS_LINE:
            raise TooLong("alias line too long (max=160)", -32)
        with self._alias_lock(entry):
            data = read_bytes(path) or b""
            lines = data.decode("utf-8", "surrogateescape").splitlines()
            if not allow_duplicate and line in lines:
                raise AliasExists(f"alias {alias}@{entry.real} -> {line} already exists.")
            new = data if (not data or data.endswith(b"\n")) else data + b"\n"
            atomic_write(path, new + line.encode("utf-8", "surrogateescape") + b"\n", 0o600, self._owner(entry))

    def remove_alias_line(self, domain: str, alias: str, prefix: str) -> None:
        """Drop every line that starts with `prefix` (vpopmail's prefix match)."""
        entry = self.real_entry(domain)
        path = self._alias_path(entry, alias)
        with self._alias_lock(entry):
            data = read_bytes(path)
            if data is None:
                raise AliasNotFound(f"No aliases {alias}@{entry.real} found")
            keep = [x for x in data.splitlines(keepends=True) if not x.decode("utf-8", "surrogateescape").startswith(prefix)]
            atomic_write(path, b"".join(keep), 0o600, self._owner(entry))

    def delete_alias(self, domain: str, alias: str) -> None:
        entry = self.real_entry(domain)
        path = self._alias_path(entry, alias)
        try:
            remove_file(path)
        except FileNotFoundError:
            raise AliasNotFound(f"No aliases {alias}@{entry.real} found") from None

    # --- ip alias map (IP_ALIAS_DOMAINS builds; vcli.store.ipmap) ------------------

    @property
    def ip_map_path(self) -> str:
        return os.path.join(self.root, ipmap.FILE)

    def _ip_maps_built(self) -> None:
        if not self.s.ip_alias_domains:
            raise IpAliasDomainsOff()

    def ip_maps(self) -> list[tuple[str, str]]:
        """(ip, domain) of etc/ip_alias_map in file order."""
        self._ip_maps_built()
        return ipmap.read_maps(self.ip_map_path)

    def get_ip_map(self, ip: str) -> str | None:
        """The domain of the first line for this IP, or None."""
        self._ip_maps_built()
        return ipmap.lookup(self.ip_map_path, ipmap.check_ip(ip))

    def add_ip_map(self, ip: str, domain: str) -> None:
        """Map an IP to an existing domain (the same pair again moves to the end)."""
        self._ip_maps_built()
        ipmap.add(self, self.ip_map_path, ip, domain, self.lock_wait)

    def del_ip_map(self, ip: str, domain: str) -> None:
        """Drop one IP-domain pair; IpMapNotFound when it is not there."""
        self._ip_maps_built()
        ipmap.delete(self.ip_map_path, ip, domain, self.lock_wait)


# --- module helpers -------------------------------------------------------------


def _passwords():
    """vcli.store.passwords, imported on first use: read-only commands never hash."""
    from . import passwords

    return passwords


def _rmtree(path, ignore_errors=False):
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


def _umask_mode() -> int:
    """0666 & ~umask: the mode vpopmail's fopen("w") gives vpasswd in vmoduser/vpasswd."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


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


def _read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _domains_root(ddir: str) -> str:
    """The `domains` directory a domain dir lives in (hash dirs skipped)."""
    d = os.path.dirname(ddir.rstrip("/"))
    probe = d
    while probe not in ("", "/"):
        if os.path.basename(probe) == "domains":
            return probe
        probe = os.path.dirname(probe)
    return d


def _read_free(path: str) -> list[str]:
    data = read_bytes(path)
    if not data:
        return []
    out = []
    for line in data.decode("latin-1").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and ".." not in line.split("/") and not line.startswith("/"):
            out.append(line)
    return out


def _drop_empty_hash_dirs(ddir: str, homes: list[str]) -> None:
    """Undoing an add: hash directories it made for its users go again if they are empty."""
    base = ddir.rstrip("/") + "/"
    parents = {os.path.dirname(h) for h in homes}
    for parent in sorted(parents, key=len, reverse=True):
        while parent.startswith(base) and len(os.path.basename(parent)) == 1:
            try:
                os.rmdir(parent)  # only ever succeeds on an empty directory
            except OSError:
                break
            parent = os.path.dirname(parent)


def _new_maildirsize(q: str) -> bytes | None:
    """The maildirsize of a new, empty Maildir (None when the quota is NOQUOTA)."""
    return None if q in ("NOQUOTA", "") else quota.maildirsize_bytes(q, 0, 0)


def _die_with_parent(parent: int) -> None:
    """Pool workers go when their command is killed, so no tree is built after a crash is replayed."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL (Linux)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _make_trees(jobs: list[tuple[str, bytes | None]], ids: tuple) -> tuple[list[str], BaseException | None]:
    """Worker-process side of a bulk add: (homes built, first error)."""
    uid, gid, active = ids
    owner = Owner(uid, gid) if active else Owner()
    made = []
    parent = os.getppid()
    for home, mds in jobs:
        if os.getppid() != parent:  # the command died (where PR_SET_PDEATHSIG is missing)
            return made, StoreIOError("interrupted")
        try:
            _make_tree(home, owner, mds)
        except Exception as exc:  # noqa: BLE001 - handed back to the parent, which rolls back
            return made, exc
        made.append(home)
    return made, None


def _make_tree(home: str, owner: Owner, maildirsize: bytes | None = None) -> None:
    """User dir + Maildir/{new,cur,tmp} + lastauth (+ maildirsize), built at intent.tmp_home(home).

    The caller renames it into place once vpasswd names the user.
    """
    if os.path.lexists(home) or is_dir(home):
        raise UserDirExists()
    j = journal()
    if j is not None:
        j.dirs.add(home)
        j.note("mailbox", home)
        return
    tmp = intent.tmp_home(home)
    _rmtree(tmp, ignore_errors=True)
    try:
        os.mkdir(tmp, 0o700)
        for sub in ("Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
            os.mkdir(os.path.join(tmp, sub), 0o700)
        made = ["", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp", "lastauth"]
        files = [("lastauth", b"0.0.0.0")]
        if maildirsize is not None:
            files.append(("Maildir/maildirsize", maildirsize))
            made.append("Maildir/maildirsize")
        for name, data in files:
            fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        if owner.active:
            for p in made:
                owner.apply(os.path.join(tmp, p))
    except OSError as exc:
        _rmtree(tmp, ignore_errors=True)
        raise io_error(exc, home) from None
