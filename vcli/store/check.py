"""`vcli check`: a read-only consistency check of the store, with an optional repair
of what can be fixed without guessing.

Each problem is one line `<path>: <what>`; a problem is `repairable` when the
right content follows from other files (a stale cdb is rebuilt from vpasswd, a
missing Maildir is recreated, a half-made tree of an interrupted command is
removed).  Problems that would need a guess (an orphaned mailbox, a vpasswd line
that does not parse) are only reported.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CorruptStore
from ..model import AssignEntry
from . import intent
from .cdb import records
from .dircontrol import DirControl
from .fsutil import Owner, RealPaths, atomic_write, locked, read_bytes
from .qmail import users_cdb
from .vpasswd import build_cdb, line_name, parse_line, split_lines


@dataclass
class Problem:
    path: str
    what: str
    repair: Callable[[], str] | None = None  # returns what it did

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


class Checker:
    def __init__(self, store):
        self.store = store
        self.problems: list[Problem] = []
        self.paths = RealPaths()  # every home's real path, its hashed dir resolved once
        self.root = os.geteuid() == 0  # owners are checked (and repaired) by root only

    def add(self, path: str, what: str, repair: Callable[[], str] | None = None) -> None:
        self.problems.append(Problem(path, what, repair))

    # --- qmail side -------------------------------------------------------------

    def check_qmail(self, only: str | None) -> list[AssignEntry]:
        q = self.store.qmail
        assign_path = q.path("users", "assign")
        data = read_bytes(assign_path)
        if data is None:
            self.add(assign_path, "missing")
            return []
        if not data.endswith(b".\n"):
            self.add(assign_path, "does not end with a '.' line")
        entries = q.assign_entries()
        names = [e.name for e in entries]
        for name in _repeated(names):
            self.add(assign_path, f"domain {name} listed more than once")
        cdb_path = q.path("users", "cdb")
        want = users_cdb(data)
        have = read_bytes(cdb_path)
        if have != want:
            self.add(cdb_path, "missing" if have is None else "does not match users/assign",
                     lambda: (q.compile_assign(), "recompiled users/cdb from users/assign")[1])
        rcpt = set((read_bytes(q.path("control", "rcpthosts")) or b"").decode("latin-1").split())
        rcpt |= set((read_bytes(q.path("control", "morercpthosts")) or b"").decode("latin-1").split())
        vds = set((read_bytes(q.path("control", "virtualdomains")) or b"").decode("latin-1").split())
        locals_ = set((read_bytes(q.path("control", "locals")) or b"").decode("latin-1").split())
        for e in entries:
            if only and e.real != only and e.name != only:
                continue
            if e.name not in rcpt:
                self.add(q.path("control", "rcpthosts"), f"{e.name} missing",
                         lambda n=e.name: (q.add_rcpthost(n), f"added {n} to rcpthosts")[1])
            if f"{e.name}:{e.name}" not in vds:
                self.add(q.path("control", "virtualdomains"), f"{e.name}:{e.name} missing",
                         lambda n=e.name: (q.add_virtualdomain(n), f"added {n}:{n} to virtualdomains")[1])
            if e.name in locals_:
                self.add(q.path("control", "locals"), f"{e.name} listed (mail would be delivered locally)",
                         lambda n=e.name: (q.remove_local(n), f"removed {n} from locals")[1])
        return [e for e in entries if not e.is_alias and (not only or e.name == only)]

    # --- one real domain -----------------------------------------------------------

    def check_domain(self, entry: AssignEntry) -> None:
        store = self.store
        ddir = entry.dir
        owner = Owner(entry.uid, entry.gid)
        try:
            # a symlinked domain directory (domains on another disk) is checked where it leads;
            # symlinks inside the domain are still never followed
            st = os.stat(ddir)
        except FileNotFoundError:
            self.add(ddir, "domain directory missing" if not os.path.islink(ddir) else
                     f"symlink to the missing {os.readlink(ddir)}")
            return
        if not stat.S_ISDIR(st.st_mode):
            self.add(ddir, "not a directory")
            return
        self._owner_mode(ddir, st, entry, 0o700)
        if store.auth.name != "cdb":
            self._check_domain_records(entry, owner)
            return
        try:
            record = intent.load(ddir)
        except CorruptStore as exc:
            self.add(intent.path(ddir), exc.message)
            record = None
        if record is not None:
            def replay(entry=entry, record=record):
                with locked(os.path.join(entry.dir, ".vpasswd.lock"), store.lock_wait, owner):
                    done = store.auth.replay(entry) if intent.pending(entry.dir) else None
                if done is None:
                    return f"the {intent.describe(record)} was replayed meanwhile by another command"
                return f"{'completed' if done else 'undid'} the {intent.describe(record)}"

            # say what the replay will do: finish a change vpasswd already shows, else undo it
            will = "completes" if store.auth.replay_outcome(entry, record)[0] else "undoes"
            self.add(intent.path(ddir), f"{intent.describe(record)}; the next change to the domain or "
                     f"--repair {will} it", replay)
            return  # the rest is checked once it is replayed
        if not os.path.exists(os.path.join(ddir, ".qmail-default")):
            self.add(os.path.join(ddir, ".qmail-default"), "missing (mail to unknown users is not handled)")
        vp = os.path.join(ddir, "vpasswd")
        data = read_bytes(vp)
        if data is None:
            self.add(vp, "missing")
            return
        lines = split_lines(data)
        users = []
        good_lines: list[bytes] = []
        for n, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):
                self.add(vp, f"line {n} has no newline (vpopmail would not index it)",
                         (lambda vp=vp, owner=owner, entry=entry: _fix_newline(store, entry, vp, owner))
                         if line.count(b":") >= 6 else None)
            try:
                users.append(parse_line(line))
                good_lines.append(line)
            except ValueError:
                self.add(vp, f"line {n} has fewer than 6 colons (vpopmail listings stop there)")
        names = [line_name(x) for x in lines]
        for dup in _repeated(names):  # not names.count() per name: that was quadratic (188 s at 100k)
            self.add(vp, f"user {dup.decode(errors='replace')} listed more than once")
        if any(b < a for a, b in zip(names, names[1:], strict=False)):
            self.add(vp, "not sorted by user name (vpopmail keeps it sorted)")
        cdb_path = vp + ".cdb"
        # the cdb is rebuilt in memory and compared (pure Python: ~0.6 s of CPU at 100,000 users).
        # For a big domain a forked child does that and the trees of the last users while this
        # process does the trees of the others (two cores: the lstats are most of the time); the
        # child names the users whose trees have anything to say, and those are checked here again
        # (in their place, with their repairs).  The cdb problem goes where it would have been listed.
        big = len(lines) >= BESIDE
        cut = int(len(users) * SPLIT) if big else len(users)
        far = _beside(lambda: self._far_part(entry, users[cut:], owner, lines, cdb_path), big)
        cdb_at = len(self.problems)
        dc = DirControl.parse(read_bytes(os.path.join(ddir, ".dir-control")))
        if dc.cur_users != len(users):
            # real vpopmail updates .dir-control without a lock, so its tools running at once
            # (with each other or with ours) can lose a count; the count is known, the hashing
            # position (the_dir) is left as it is

            def recount(ddir=ddir, entry=entry):
                was, now = store.auth.recount_users(entry)
                return f"set the user count of {os.path.join(ddir, '.dir-control')} to {now} (was {was})"

            self.add(os.path.join(ddir, ".dir-control"),
                     f"counts {dc.cur_users} users, vpasswd has {len(users)} (vdominfo's user count is off)", recount)
        homes = {self._check_user(entry, u, owner) for u in users[:cut]}
        answer = far()
        if answer is None:  # no child (a small domain), or one that died: all of it here
            homes |= {self._check_user(entry, u, owner) for u in users[cut:]}
            why = _cdb_problem(lines, cdb_path)
        else:
            why, _, positions = answer.partition("\t")
            why, flagged = why or None, {int(x) for x in positions.split()}
            plain = self.paths.real
            for i, u in enumerate(users[cut:]):
                homes.add(self._check_user(entry, u, owner) if i in flagged else plain(u.dir, is_link=False))
        self._check_leftovers(ddir, homes)
        if why:
            def rebuild(vp=vp, owner=owner, entry=entry):
                with store.auth.domain_lock(entry):
                    _fix_newline(store, entry, vp, owner)  # else the cdb would lose the last user
                    fresh = split_lines(read_bytes(vp) or b"")
                    atomic_write(vp + ".cdb", build_cdb(fresh), 0o600, owner, tmp_name="cdb.tmp")
                return f"rebuilt {vp}.cdb from vpasswd"

            self.problems.insert(cdb_at, Problem(cdb_path, why, rebuild))

    def _far_part(self, entry: AssignEntry, users: list, owner: Owner, lines: list[bytes], cdb_path: str) -> str:
        """In the child: the trees of `users` and the cdb comparison, as one line of text -- the
        cdb's problem, then the positions of the users whose check said anything or whose home
        is not where its path says (a symlink): those are checked again in the parent.  Leaves
        self.problems as it found it."""
        start = len(self.problems)
        flagged = []
        plain = self.paths.real
        for i, u in enumerate(users):
            before = len(self.problems)
            real = self._check_user(entry, u, owner)
            if len(self.problems) != before or real != plain(u.dir, is_link=False):
                flagged.append(i)
        del self.problems[start:]
        return (_cdb_problem(lines, cdb_path) or "") + "\t" + " ".join(map(str, flagged))

    # --- one real domain of an SQL module ------------------------------------------------------

    def _check_domain_records(self, entry: AssignEntry, owner: Owner) -> None:
        """The module's records against the disk: the dir_control count against the rows, each
        row's home and Maildir, the temp trees of adds (a crash between COMMIT and the rename
        leaves the row and the tree under its temp name: --repair renames it in, the rule of the
        cdb replay), orphaned mailboxes.  A row whose home is missing is only reported: the
        rows are the users, and an unmounted disk must not get a million empty Maildirs."""
        auth = self.store.auth
        ddir = entry.dir
        label = f"{auth.name}:{entry.real}"
        if not os.path.exists(os.path.join(ddir, ".qmail-default")):
            self.add(os.path.join(ddir, ".qmail-default"), "missing (mail to unknown users is not handled)")
        users = {u.name: u for u in auth.list_users(entry)}
        dc = auth.dir_control(entry)
        if dc.cur_users != len(users):
            def recount(entry=entry, label=label):
                was, now = auth.recount_users(entry)
                return f"set the dir_control user count of {label} to {now} (was {was})"

            self.add(label, f"dir_control counts {dc.cur_users} users, the table has {len(users)} "
                     "(vdominfo's user count is off)", recount)
        handled: set[str] = set()
        now = time.time()
        for tmp in _temp_trees(ddir):
            handled.add(tmp)
            final = os.path.join(os.path.dirname(tmp), os.path.basename(tmp)[len(intent.TMP_PREFIX):])
            u = users.get(os.path.basename(final))
            if u is not None and u.dir.rstrip("/") == final and not os.path.lexists(final):
                self.add(tmp, f"tree of {u.name}, whose record is committed, not renamed into place",
                         lambda tmp=tmp, final=final: _rename_in(tmp, final))
                continue
            try:
                young = now - os.lstat(tmp).st_mtime < ADD_IN_PROGRESS
            except FileNotFoundError:
                continue
            if young:
                continue  # an add may be building it right now (its COMMIT has not come yet)
            self.add(tmp, "half-made user directory of an interrupted add", lambda p=tmp: _rmtree(p))
        homes = set()
        for u in users.values():
            if not u.dir:
                continue  # vchkpw makes the home at the first login (spec/sql.md §4.10)
            if intent.tmp_home(u.dir.rstrip("/")) in handled and not os.path.lexists(u.dir):
                homes.add(self.paths.real(u.dir))
                continue
            homes.add(self._check_user(entry, u, owner, recreate=False))
        self._check_leftovers(ddir, homes, handled, f"the {auth.name} table")

    def check_stored_domains(self, entries: list[AssignEntry]) -> None:
        """Domains the module holds rows of that users/assign does not name (left alone)."""
        auth = self.store.auth
        known = {e.real for e in entries}
        for name in auth.stored_domains():
            if name not in known:
                self.add(f"{auth.name}:{name}", "records of a domain users/assign does not name "
                         "(left by vdeldomain of another tool?); left alone")

    def _check_user(self, entry: AssignEntry, u, owner: Owner, recreate: bool = True) -> str:
        """One user's tree; returns the home's real path (the orphan search skips it).  Per user
        an lstat of the home and of each Maildir dir and a read of maildirsize: the hashed dirs
        are resolved once for the domain (issue 11: check within 1.5x of stat'ing every tree)."""
        base = entry.dir.rstrip("/") + "/"
        try:
            st = os.lstat(u.dir)
        except FileNotFoundError:
            st = None
        real = self.paths.real(u.dir, is_link=st is not None and stat.S_ISLNK(st.st_mode))
        top = self.paths.dir(entry.dir).rstrip("/")
        if not real.startswith(top + "/"):
            if not u.dir.startswith(base):
                # nothing is created or changed out there, not even by --repair
                self.add(u.dir, f"home of {u.name} is outside the domain directory")
                return real
        if st is None:
            self.add(u.dir, f"home of {u.name} missing" + ("" if recreate else _LEFT_ALONE),
                     (lambda: self._recreate(u, owner, whole=True)) if recreate else None)
            return real
        if stat.S_ISLNK(st.st_mode):
            self.add(u.dir, f"home of {u.name} is a symlink")
            return real
        if st.st_mode & 0o077 or (self.root and (st.st_uid, st.st_gid) != (entry.uid, entry.gid)):
            self._owner_mode(u.dir, st, entry, 0o700)
        maildir = u.dir.rstrip("/") + "/Maildir"
        for p in (maildir, maildir + "/new", maildir + "/cur", maildir + "/tmp"):
            try:
                mode = os.lstat(p).st_mode
            except FileNotFoundError:
                self.add(p, f"missing ({u.name})" + ("" if recreate else _LEFT_ALONE),
                         (lambda: self._recreate(u, owner, whole=False)) if recreate else None)
                break
            if not stat.S_ISDIR(mode):
                self.add(p, "not a directory")
                break
        ms = maildir + "/maildirsize"
        content = read_bytes(ms)
        if content is not None:
            text = content.decode("latin-1").split("\n")
            body = [x for x in text[1:] if x.strip()]
            if not all(len(x.split()) == 2 and all(p.lstrip("-").isdigit() for p in x.split()) for x in body):
                self.add(ms, "does not parse (quota line, then '<bytes> <count>' lines)")
        return real

    def _recreate(self, u, owner: Owner, whole: bool) -> str:
        for sub in ([""] if whole else []) + ["Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"]:
            p = os.path.join(u.dir, sub) if sub else u.dir
            if not os.path.isdir(p):
                os.makedirs(p, 0o700, exist_ok=True)
                owner.apply(p)
        return f"recreated the Maildir of {u.name}"

    def _check_leftovers(self, ddir: str, homes: set[str], handled: set[str] = frozenset(),
                         records: str = "vpasswd") -> None:
        """Temp files and half-made trees of interrupted commands; orphaned mailboxes.
        `handled`: temp trees already judged (SQL)."""
        self._walk_leftovers(ddir, 0, homes, handled, records)

    def _walk_leftovers(self, root: str, depth: int, homes: set[str], handled: set[str], records: str) -> None:
        """The domain dir and its hash dirs, top down as os.walk goes, never into a mailbox; a
        home is known from the directory entry (no stat, no realpath of each of 100,000)."""
        try:
            with os.scandir(root) as it:
                entries = list(it)
        except OSError:
            return
        real_root = self.paths.dir(root).rstrip("/") + "/"  # an entry's real path, unless a symlink
        dirs, files = [], []
        for e in entries:
            try:
                (dirs if e.is_dir() else files).append(e)
            except OSError:
                files.append(e)
        for e in files:
            name = e.name
            if (name.startswith(("vpasswd.bak.", "cdb.tmp", ".dir-control.", ".vpasswd.tmp", ".vcli-intent."))
                    or ".tmp." in name or name.endswith(".vcli-new")):
                p = e.path
                self.add(p, "temporary file of an interrupted command", lambda p=p: _unlink(p))
        keep = []
        for e in dirs:
            name, p = e.name, e.path
            if name.startswith(".vcli-new."):
                if p not in handled:
                    self.add(p, "half-made user directory of an interrupted add", lambda p=p: _rmtree(p))
                continue
            if (os.path.realpath(p) if e.is_symlink() else real_root + name) in homes:
                continue  # a mailbox: don't descend
            if depth < 3 and len(name) == 1:
                keep.append(p)  # a hash directory
                continue
            if os.path.isdir(os.path.join(p, "Maildir")):
                self.add(p, f"mailbox not in {records} (orphaned; left alone)")
        for p in keep:
            if not os.path.islink(p):  # os.walk does not follow a symlinked hash dir either
                self._walk_leftovers(p, depth + 1, homes, handled, records)

    def check_unregistered(self, entries: list[AssignEntry]) -> None:
        """Domain directories under domains/ that users/assign does not name: debris of an
        interrupted vadddomain or vdeldomain (or a domain removed by hand).  Reported, not removed."""
        known = {os.path.realpath(e.dir) for e in entries}
        roots = {os.path.join(self.store.root, "domains")}
        roots |= {os.path.dirname(os.path.realpath(e.dir)) for e in entries}
        seen: set[str] = set()
        for base in sorted(roots):
            if not os.path.isdir(base) or os.path.basename(base) != "domains":
                continue
            stack = [(base, 0)]
            while stack:
                d, depth = stack.pop()
                for entry in os.scandir(d):
                    if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
                        continue
                    real = os.path.realpath(entry.path)
                    if real in known or real in seen:
                        continue
                    seen.add(real)
                    if len(entry.name) == 1 and depth < 3:
                        stack.append((entry.path, depth + 1))  # a hash directory
                    elif os.path.exists(os.path.join(entry.path, "vpasswd")) or "." in entry.name:
                        self.add(entry.path, "domain directory not in users/assign "
                                 "(left by an interrupted vadddomain/vdeldomain?); left alone")

    def _owner_mode(self, path: str, st: os.stat_result, entry: AssignEntry, mode: int) -> None:
        if stat.S_IMODE(st.st_mode) & 0o077:
            self.add(path, f"mode {stat.S_IMODE(st.st_mode):04o} (group/other access; vpopmail uses {mode:04o})")
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (entry.uid, entry.gid):
            self.add(path, f"owner {st.st_uid}:{st.st_gid}, not the domain's {entry.uid}:{entry.gid}",
                     lambda: (os.lchown(path, entry.uid, entry.gid), f"chowned {path}")[1])


def check(store, domain: str | None = None) -> list[Problem]:
    c = Checker(store)
    if domain:
        domain = domain.lower()
        entry = store.find_domain(domain)
        if entry is None:
            from ..errors import DomainNotFound

            raise DomainNotFound()
        domain = entry.real
    entries = c.check_qmail(domain)
    for entry in entries:
        c.check_domain(entry)
    if not domain:
        c.check_unregistered(store.qmail.assign_entries())
        if store.auth.name != "cdb":
            c.check_stored_domains(store.qmail.assign_entries())
    return c.problems


# an SQL add builds its tree before COMMIT: a temp tree younger than this may be one at work
ADD_IN_PROGRESS = 120.0
_LEFT_ALONE = " (its record stays; left alone: restore it, or vdeluser)"


BESIDE = 20_000  # vpasswd lines from which the cdb comparison and part of the trees go to a child
SPLIT = 0.55  # of a big domain's users, the share whose trees this process checks (the child has the cdb)


def _cdb_problem(lines: list[bytes], cdb_path: str) -> str | None:
    """What is wrong with vpasswd.cdb against these vpasswd lines, or None."""
    have = read_bytes(cdb_path)
    if have is not None and have == build_cdb(lines):
        return None
    if have is None:
        return "missing"
    try:
        list(records(have))
    except ValueError:
        return "corrupt"
    return "does not match vpasswd"


def _beside(fn: Callable[[], str], fork: bool) -> Callable[[], str | None]:
    """fn() in a forked child while the caller goes on (the child sees this process's memory:
    nothing is copied to it); returns the function that waits for its answer.  None without a
    child, or when the child died without an answer: the caller then does the work itself."""
    if not fork:
        return lambda: None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one answer, then out without running or flushing anything of the parent's
        code = 1
        try:
            os.close(r)
            data = memoryview(b"=" + fn().encode())
            while data:  # more than a pipe's buffer waits for the parent to read
                data = data[os.write(w, data):]
            code = 0
        finally:
            os._exit(code)
    os.close(w)

    def wait() -> str | None:
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)  # 0 only once the whole answer is written
        return data[1:].decode() if status == 0 and data.startswith(b"=") else None

    return wait


def _temp_trees(ddir: str) -> list[str]:
    """The `.vcli-new.<user>` trees of adds in the domain dir and its hash dirs (3 levels)."""
    out = []
    stack = [(ddir, 0)]
    while stack:
        d, depth = stack.pop()
        try:
            items = list(os.scandir(d))
        except OSError:
            continue
        for it in items:
            if not it.is_dir(follow_symlinks=False):
                continue
            if it.name.startswith(intent.TMP_PREFIX):
                out.append(it.path)
            elif len(it.name) == 1 and depth < 3:
                stack.append((it.path, depth + 1))
    return sorted(out)


def _rename_in(tmp: str, final: str) -> str:
    from .fsutil import fsync_dir

    if os.path.lexists(final):
        return f"{final} exists meanwhile; {tmp} left alone"
    os.rename(tmp, final)
    fsync_dir(os.path.dirname(final))
    return f"renamed {tmp} into place as {final}"


def _fix_newline(store, entry: AssignEntry, vp: str, owner: Owner) -> str:
    """Give vpasswd's last line its newline when that line is a record the readers accept
    (6 colons: listings and vpopmail's own parser take it), so a cdb rebuild indexes it."""
    with store.auth.domain_lock(entry):
        data = read_bytes(vp) or b""
        last = split_lines(data)[-1:]
        if not last or last[0].endswith(b"\n") or last[0].count(b":") < 6:
            return f"{vp}: last line left as it is"
        mode = stat.S_IMODE(os.stat(vp).st_mode)
        atomic_write(vp, data + b"\n", mode, owner, tmp_name=f"vpasswd.bak.{os.getpid()}")
        atomic_write(vp + ".cdb", build_cdb(split_lines(data + b"\n")), 0o600, owner, tmp_name="cdb.tmp")
        return f"added the missing newline at the end of {vp} and rebuilt {vp}.cdb"


def _unlink(path: str) -> str:
    os.unlink(path)
    return f"removed {path}"


def _rmtree(path: str) -> str:
    import shutil

    shutil.rmtree(path)
    return f"removed {path}"


def _repeated(items: list) -> set:
    """The items listed more than once (one pass)."""
    seen: set = set()
    return {x for x in items if x in seen or seen.add(x)}
