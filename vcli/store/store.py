"""The local vpopmail store: domains, users, quotas, aliases, limits.

This is vpopmail.c's part, the same for every auth module: domain dirs, the domain hashing
counter, Maildirs and maildirsize, users/assign, rcpthosts/virtualdomains, .qmail files,
limits files, and the validation of every value.  The user records live in the site's auth
module (`self.auth`, vcli/store/auth/): cdb.py keeps vpopmail's vpasswd + vpasswd.cdb under
its own lock with a crash-safe commit; the Store hands it the disk work of a change
(`_make_user_dirs`, `_stage_maildirsize`, `_remove_tree`).  Nothing here prints or exits.
"""

from __future__ import annotations

import errno
import os
import stat
from _collections_abc import (  # collections.abc without the collections package (start-up)
    Callable,
    Iterable,
    Iterator,
)

from .. import flags as F
from .. import model
from ..backend_common import BackendCommon
from ..config import Settings
from ..errors import (
    AliasExists,
    AliasNotFound,
    BadCharacter,
    CatchallProtected,
    DomainExists,
    IllegalUsername,
    IpAliasDomainsOff,
    LimitsUnreadable,
    PasswordChangeDenied,
    StoreIOError,
    StoreMissing,
    TooLong,
    UserDirExists,
    UserExists,
    VpopError,
)
from ..model import MAX_DIR, AssignEntry, DomainInfo, Limits, NewUser, UserChanges, UserUsage, VUser
from . import intent, ipmap, names, quota
from .fsutil import (
    Owner,
    atomic_write,
    fsync_dir,
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
from .qmail import QmailFiles, _assign_key

MAX_ALIAS_LINE = 160
# alias names whose .qmail- file is not an alias: `default` is the domain's catch-all (.qmail-default,
# written by vadddomain).  `foo-default` (qmail's extension default of foo-*, ezmlm's list files) stays legal.
RESERVED_ALIASES = frozenset({"default"})


class Store(BackendCommon):
    def __init__(self, settings: Settings, warn: Callable[[str], None] | None = None, lock_wait: float | None = None):
        self.s = settings
        self.warn = warn or (lambda msg: None)
        self.lock_wait = lock_wait if lock_wait is not None else settings.lock_wait
        self.qmail = QmailFiles(settings.qmail_dir, self.warn, self.lock_wait)
        from .auth import open_auth

        self.auth = open_auth(self)  # the user database: cdb, or the module the site names

    def close(self) -> None:
        """Say goodbye to the auth module's servers now (an SQL module's connections), rather
        than at interpreter exit; the store can still be used afterwards (it reconnects)."""
        self.auth.close()

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
        return model.parse_address(address, self.default_domain(), self.s.max_user)

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
        """The domain's dir-control count (what vdominfo calls "users")."""
        return self.auth.user_count(entry)

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
        domain = model.check_new_domain(domain)
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
        self.auth.check_new_domain(domain, [e.name for e in self.list_domains()])

        def make(hash_dir: str) -> str:  # the domain's directory, in the hash dir the counter chose
            self._makedirs(domains, owner)
            parent = os.path.join(domains, hash_dir) if hash_dir else domains
            ddir = os.path.join(parent, domain)
            if len(ddir) > MAX_DIR:
                raise TooLong("dir too long (max=160)", -30)
            self._makedirs(parent, owner)
            try:
                make_dir(ddir, 0o700, owner)
            except FileExistsError:
                raise VpopError(code=-14) from None
            return ddir

        try:
            ddir, undo = self.auth.take_domain_dir(domains, owner, make)
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
            self.auth.create_domain(entry)
            self.add_users(domain, [pm], prepared=True)
        except BaseException:
            try:
                if self.find_domain(domain):
                    self.del_domain(domain, force=True, undo_count=undo)
                else:  # not registered yet: only the directory and the counter to undo
                    self._remove_tree(ddir, domains)
                    self.auth.release_domain_dir(domains, owner, undo)
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
        model.check_domain_chars(alias.lower())
        alias = alias.lower()
        real_entry = self.real_entry(real)
        if self.find_domain(alias):
            raise DomainExists()
        entry = AssignEntry(alias, real_entry.real, real_entry.uid, real_entry.gid, real_entry.dir)
        if self.s.sql_aliasdomains:  # the aliasdomains row first: a refused one leaves assign alone
            self.auth.alias_domain_added(real_entry.real, alias)
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
        (what the auth module's take_domain_dir returned) puts the domain counter back exactly
        when a failed vadddomain is undone and nobody counted since (cdb: domains/.dir-control
        byte for byte)."""
        entry = self.domain(domain)
        if entry.is_alias:
            self._check_writable([entry], [])
            self._unregister([entry])
            if self.s.sql_aliasdomains:
                self.auth.alias_domains_removed([entry.name])
            self.qmail.hup_qmail_send()
            return []
        aliases = [e for e in self.list_domains() if e.real == entry.real and e.name != entry.name]
        if aliases and not force:
            return [a.name for a in aliases]
        ddir = entry.dir.rstrip("/") or entry.dir
        domains = _domains_root(ddir)
        target = self._domain_target(ddir)
        dirs = [os.path.dirname(ddir)] + ([os.path.dirname(target)] if target else [])
        if self.auth.name == "cdb" and os.path.exists(os.path.join(domains, ".dir-control")):
            dirs.append(domains)
        self._check_writable(aliases + [entry], dirs)
        self._unregister(aliases + [entry])
        self.qmail.hup_qmail_send()
        # qmail no longer knows the domain: from here on only its tree and its count go
        if os.path.isdir(ddir):
            try:
                remove_file(os.path.join(ddir, ".qmailadmin-limits"))
            except FileNotFoundError:
                pass
            self.auth.delete_domain(entry)
        if target:
            self._remove_tree(target, os.path.dirname(target), progress)
            remove_file(ddir)
        else:
            self._remove_tree(ddir, domains, progress)
        self.auth.release_domain_dir(domains, self._owner(entry), undo_count)
        if self.s.sql_aliasdomains:
            self.auth.alias_domains_removed([entry.name] + [a.name for a in aliases])
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
            if self._limits_table():  # ENABLE_MYSQL_LIMITS: the table, never .qmailadmin-limits
                lim = self.auth.limits_get(entry)
                if lim is not None:
                    return lim
            else:
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
        if self._limits_table():
            self.auth.limits_set(entry, lim)
            return
        atomic_write(self.limits_path(entry), lim.dump(), 0o600, self._owner(entry))

    def _limits_table(self) -> bool:
        """ENABLE_MYSQL_LIMITS on a MySQL site: domain limits live in the `limits` table."""
        return getattr(self.auth, "has_limits_table", False)

    def del_limits(self, domain: str) -> None:
        entry = self.real_entry(domain)
        if self._limits_table():
            self.auth.limits_delete(entry)
            return
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

    def get_user(self, user: str, domain: str) -> VUser:
        """One user, from the site's auth module (cdb: vpasswd.cdb, never a scan)."""
        return self.auth.get_user(self.real_entry(domain), user.lower())

    def existing_users(self, domain: str, users: list[str]) -> set[str]:
        """Which of these users the domain has (in one pass of the auth module, for bulk import)."""
        return self.auth.existing_users(self.real_entry(domain), [u.lower() for u in users])

    def list_users(self, domain: str) -> Iterator[VUser]:
        """Every user of the domain, in the auth module's order (cdb: vpasswd's)."""
        yield from self.auth.list_users(self.real_entry(domain))

    def rebuild_cdb(self, domain: str) -> str:
        """vmkpasswd: the auth module's index built afresh under the domain lock (cdb: vpasswd.cdb
        from vpasswd; a malformed vpasswd is refused, not half indexed); its path."""
        return self.auth.rebuild_index(self.real_entry(domain))

    def user_usage(self, user: VUser) -> UserUsage:
        used_bytes, used_count = quota.usage(os.path.join(user.dir, "Maildir"))
        pct = None if user.quota == "NOQUOTA" else quota.percent(user.quota, used_bytes, used_count)
        return UserUsage(used_bytes, used_count, pct)

    def lastauth(self, user: VUser, domain: str | None = None) -> tuple[float, str] | None:
        """(time, content) of the user's last login, or None (cdb: the lastauth file; SQL: the
        lastauth row, which needs the domain: `domain`, else the one the record was read from)."""
        if not getattr(self.auth, "lastauth_by_domain", False):
            return self.auth.lastauth(None, user)  # cdb: the file in the home, no lookup
        domain = domain or getattr(user, "_domain", None)
        if not domain:
            return self.auth.lastauth(None, user)
        # a listing asks once per user of one domain: the entry is kept while users/cdb is the
        # same file (a daemon lives on while domains are deleted and added again)
        try:
            st = os.stat(self.qmail.path("users", "cdb"))
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        cached = getattr(self, "_lastauth_entry", None)
        if cached is None or cached[:2] != (domain, stamp) or stamp is None:
            cached = self._lastauth_entry = (domain, stamp, self.real_entry(domain))
        return self.auth.lastauth(cached[2], user)

    def set_lastauth(self, user: VUser, domain: str, ip: str) -> None:
        """vchkpw's record of a good login (cdb: `<home>/lastauth` := the client IP, its mtime the
        time); an IP that could not be one is recorded as 0.0.0.0."""
        if any(c in ip for c in "\0\n\r/") or len(ip) > 64:
            ip = "0.0.0.0"
        self.auth.set_lastauth(self.real_entry(domain), user, ip)

    # --- the disk part of a user change (the auth module calls these inside its commit) ---------

    def _stage_maildirsize(self, vu: VUser, owner: Owner, ddir: str,
                           durable: bool = True, seen: dict | None = None) -> list[tuple[str | None, str]]:
        """maildirsize follows a new quota: staged in Maildir/tmp, or (NOQUOTA, tmp "") removed at the commit.
        `durable=False`: not fsync'ed (a batch syncs the filesystem once before its intent ends).
        `seen`: a batch's cache of the hashed dirs already resolved (a domain-wide quota).

        Never through a symlink out of the domain: a home or Maildir leading elsewhere is left alone."""
        maildir = os.path.join(vu.dir, "Maildir")
        path = os.path.join(maildir, "maildirsize")
        if not _maildir_within(maildir, ddir, seen):
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
        return [(write_staged(path, data, 0o600, owner, tmp_name, durable), path)]

    def _check_gecos(self, gecos: str, colon_ok: bool = False) -> str:
        """`colon_ok`: a changed comment on an SQL site may hold ':' (vmoduser stores it verbatim
        there, sql.md §10 item 17; only vpasswd's format forbids it)."""
        if (":" in gecos and not colon_ok) or any(c in gecos for c in "\0\n\r"):
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
        user = model.check_new_user(new.user.lower(), self.s.max_user)
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
        return self.auth.add_users(entry, new_users, default_q, exist_ok, progress)

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

    def _make_user_dirs(self, users: list[VUser], owner: Owner, made: list[str], progress=None,
                        lastauth: bool = True) -> None:
        """Build the users' trees under their temp names; `made` collects the homes built.
        `lastauth`: with the `lastauth` file of a new account (cdb; SQL keeps it in a table).

        mkdir dominates a bulk import (five directories a user, ~40 us each on ext4), and
        directories in different parents can be made concurrently, so large batches use
        worker processes (threads would fight over the GIL between syscalls).
        """
        for parent in sorted({os.path.dirname(vu.dir) for vu in users}):
            self._makedirs(parent, owner)
        jobs = [(vu.dir, _new_maildirsize(vu.quota)) for vu in users]
        if len(users) < 200 or journal() is not None:
            for i, (home, mds) in enumerate(jobs, 1):
                _make_tree(home, owner, mds, lastauth)
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
            for ok, exc in pool.map(_make_trees, chunks,
                                    [(owner.uid, owner.gid, owner.active, lastauth)] * len(chunks)):
                made.extend(ok)
                done += len(ok)
                if exc is not None and error is None:
                    error = exc
                if progress and error is None:
                    progress(done)
        if error is not None:
            raise error

    def mod_user(self, user: str, domain: str, ch: UserChanges, rebuild_cdb: bool = True,
                 enforce_no_passwd_chng: bool = False) -> VUser:
        """vmoduser / mod_user on one account; returns the new record."""
        entry = self.real_entry(domain)
        change, q = self._user_change(entry, ch, enforce_no_passwd_chng, fresh_hash=False)
        return self.auth.modify_user(entry, user.lower(), change, _umask_mode(), rebuild_cdb,
                                     maildirsize=q is not None)

    def mod_users(self, domain: str, ch: UserChanges, users: list[str] | None = None,
                  rebuild_cdb: bool = True, enforce_no_passwd_chng: bool = False) -> list[VUser]:
        """mod_user of every user of the domain (or of `users`; names not there are skipped) in
        one lock and one rewrite of the user database: vmoduser/vsetuserquota DOMAIN.  The same
        validation and the same files as mod_user of each in turn; a new password gets its own
        salt per user.  Returns the new records, in vpasswd order."""
        entry = self.real_entry(domain)
        change, q = self._user_change(entry, ch, enforce_no_passwd_chng, fresh_hash=True)
        changes = change if users is None else dict.fromkeys((u.lower() for u in users), change)
        return self.auth.modify_users(entry, changes, _umask_mode(), rebuild_cdb, maildirsize=q is not None)

    def _user_change(self, entry: AssignEntry, ch: UserChanges, enforce_no_passwd_chng: bool,
                     fresh_hash: bool) -> tuple[Callable[[VUser], VUser], str | None]:
        """(change function, normalized quota or None) of `ch`, every value checked first;
        `fresh_hash`: hash the password per call (a batch), else once now."""
        if ch.gecos is not None:
            self._check_gecos(ch.gecos, colon_ok=self.auth.name != "cdb")
        hashed = None
        if ch.password is not None:
            _passwords().check_clear(ch.password)
            if self.s.clear_passwords and ":" in ch.password:
                raise BadCharacter()
            if not fresh_hash:
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
            if ch.password is not None:
                u.passwd = hashed if hashed is not None else _passwords().hash_password(ch.password, self.s.hash)
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

        return change, q

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
        return self.auth.delete_user(entry, user)

    def del_users(self, domain: str, users: list[str]) -> list[VUser]:
        """Many vdelusers at once (vdeloldusers on a big domain): one lock, one rewrite of the user
        database, the same files as deleting them one by one; users not there are skipped."""
        entry = self.real_entry(domain)
        wanted = [u.lower() for u in users]
        if self._catchall_user(entry) in wanted:
            raise CatchallProtected()
        return self.auth.delete_users(entry, wanted)

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

    def _valias(self) -> bool:
        """VALIAS on an SQL site: the aliases are rows of the valias table, not .qmail files."""
        return self.s.valias and hasattr(self.auth, "valias_names")

    def alias_names(self, domain: str) -> list[str]:
        entry = self.real_entry(domain)
        if self._valias():
            return self.auth.valias_names(entry)
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
        path = self._alias_path(entry, alias)
        if self._valias():
            return self.auth.valias_lines(entry, alias.lower())
        data = read_bytes(path)
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
        if self._valias():
            self.auth.valias_add(entry, alias.lower(), line, allow_duplicate)
            return
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
        if self._valias():  # vpopmail's DELETE compares the whole line (sql.md §4.12)
            self.auth.valias_remove(entry, alias.lower(), prefix)
            return
        with self._alias_lock(entry):
            data = read_bytes(path)
            if data is None:
                raise AliasNotFound(f"No aliases {alias}@{entry.real} found")
            keep = [x for x in data.splitlines(keepends=True) if not x.decode("utf-8", "surrogateescape").startswith(prefix)]
            atomic_write(path, b"".join(keep), 0o600, self._owner(entry))

    def delete_alias(self, domain: str, alias: str) -> None:
        entry = self.real_entry(domain)
        path = self._alias_path(entry, alias)
        if self._valias():
            self.auth.valias_delete(entry, alias.lower())
            return
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

    def _ip_map_table(self) -> bool:
        """An SQL site keeps the map in its ip_alias_map table (one domain per address)."""
        return hasattr(self.auth, "ipmap_list")

    def ip_maps(self) -> list[tuple[str, str]]:
        """(ip, domain) of etc/ip_alias_map in file order (SQL: the table's rows by address)."""
        self._ip_maps_built()
        if self._ip_map_table():
            return self.auth.ipmap_list()
        return ipmap.read_maps(self.ip_map_path)

    def get_ip_map(self, ip: str) -> str | None:
        """The domain of the first line for this IP, or None."""
        self._ip_maps_built()
        if self._ip_map_table():
            return self.auth.ipmap_get(ipmap.check_ip(ip))
        return ipmap.lookup(self.ip_map_path, ipmap.check_ip(ip))

    def add_ip_map(self, ip: str, domain: str) -> None:
        """Map an IP to an existing domain (the same pair again moves to the end; SQL: the
        address's row now names this domain)."""
        self._ip_maps_built()
        if self._ip_map_table():
            ipmap.check_ip(ip)
            if self.find_domain(domain.lower()) is None:
                raise ipmap.DomainNotFound(f"domain {domain.lower()} does not exist")
            self.auth.ipmap_add(ip, domain.lower())
            return
        ipmap.add(self, self.ip_map_path, ip, domain, self.lock_wait)

    def del_ip_map(self, ip: str, domain: str) -> None:
        """Drop one IP-domain pair; IpMapNotFound when it is not there."""
        self._ip_maps_built()
        if self._ip_map_table():
            if not self.auth.ipmap_delete(ipmap.check_ip(ip), domain.lower()):
                raise ipmap.IpMapNotFound(f"no ip map {ip} {domain.lower()}")
            return
        ipmap.delete(self.ip_map_path, ip, domain, self.lock_wait)


# --- module helpers -------------------------------------------------------------


def _maildir_within(maildir: str, ddir: str, seen: dict | None) -> bool:
    """resolves_within(maildir, ddir), or True when the Maildir does not exist -- by one realpath
    of each hashed dir (cached in `seen`) and an lstat of the home and the Maildir, instead of a
    realpath of every user's path (~20 lstats each: half of a 100,000-user vsetuserquota)."""
    if seen is None:
        return not os.path.lexists(maildir) or resolves_within(maildir, ddir)
    top = seen.get("")
    if top is None:
        top = seen[""] = os.path.realpath(ddir).rstrip("/")
    home = os.path.dirname(maildir)
    parent = os.path.dirname(home)
    real = seen.get(parent)
    if real is None:
        real = seen[parent] = os.path.realpath(parent)
    if not (real == top or real.startswith(top + "/")):
        return not os.path.lexists(maildir)
    for p in (home, maildir):
        try:
            if stat.S_ISLNK(os.lstat(p).st_mode):
                return resolves_within(maildir, ddir)
        except FileNotFoundError:
            return True  # no Maildir: nothing to follow (the caller finds it missing)
        except OSError:
            return resolves_within(maildir, ddir)
    return True


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
    uid, gid, active, lastauth = ids
    owner = Owner(uid, gid) if active else Owner()
    made = []
    parent = os.getppid()
    if active and jobs and _as_owner(uid, gid, os.path.dirname(jobs[0][0]), parent):
        owner = Owner()  # created as the owner: no chown per file and directory
    for home, mds in jobs:
        if os.getppid() != parent:  # the command died (where PR_SET_PDEATHSIG is missing)
            return made, StoreIOError("interrupted")
        try:
            _make_tree(home, owner, mds, lastauth)
        except Exception as exc:  # noqa: BLE001 - handed back to the parent, which rolls back
            return made, exc
        made.append(home)
    return made, None


def _as_owner(uid: int, gid: int | None, where: str, parent: int) -> bool:
    """A tree-building worker process (root) takes the domain owner's effective ids, so what it
    creates is theirs without six chowns a user; True if it did.  False (still root, the caller
    chowns) when it cannot, or when the owner could not reach `where` (a store below a directory
    only root may enter)."""
    import ctypes  # noqa: F401 - for _die_with_parent below: once the ids change, the interpreter's files may be out of reach

    egid = os.getegid()
    try:
        try:
            if gid is not None:
                os.setegid(gid)
            os.seteuid(uid)
        except OSError:
            os.setegid(egid)
            return False
        if not os.access(where, os.W_OK | os.X_OK, effective_ids=True):
            os.seteuid(0)
            os.setegid(egid)
            return False
        return True
    finally:
        # every change of credentials -- the way back to root included -- clears
        # PR_SET_PDEATHSIG: set it again on each path, or a worker outlives a killed command
        # (and holds its output pipes open forever)
        _die_with_parent(parent)


def _make_tree(home: str, owner: Owner, maildirsize: bytes | None = None, lastauth: bool = True) -> None:
    """User dir + Maildir/{new,cur,tmp} + lastauth (+ maildirsize), built at intent.tmp_home(home);
    `lastauth=False`: no lastauth file (an SQL site keeps it in its table).

    The caller renames it into place once vpasswd names the user.
    """
    j = journal()
    if os.path.lexists(home) or (j is not None and is_dir(home)):
        raise UserDirExists()
    if j is not None:
        j.dirs.add(home)
        j.note("mailbox", home)
        return
    tmp = intent.tmp_home(home)
    try:
        try:  # a bulk add makes 100,000 of these: no lstat first, a leftover temp tree is the rare case
            os.mkdir(tmp, 0o700)
        except FileExistsError:
            _rmtree(tmp, ignore_errors=True)
            os.mkdir(tmp, 0o700)
        for sub in ("Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
            os.mkdir(os.path.join(tmp, sub), 0o700)
        made = ["", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] + (["lastauth"] if lastauth else [])
        files = [("lastauth", b"0.0.0.0")] if lastauth else []
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
