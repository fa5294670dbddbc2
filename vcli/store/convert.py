"""`vcli convert`: move a site's user records from one auth module to another (vpopmail's vconvert).

Only the user database moves: the domain dirs, Maildirs, users/assign and the qmail files are
shared by every module (vcli/store/auth/__init__.py) and stay where they are.  Per domain the
records and the dir-control counter are handed to the target's `import_records` after
`delete_domain` has emptied the domain there (so a rerun replaces what a half run left; an SQL
target takes them IMPORT_CHUNK at a time), then the lastauth records; after every domain is
copied, each is verified record for record against the source, and only then does the caller
switch the configuration (vcli/configfile.py).  A kill at any point leaves the configuration,
and so the old module, in force; running it again copies everything again.

While a cdb source is copied its domains stay locked (`.vpasswd.lock`, which vpopmail's own
tools take too) until the switch, so no change made meanwhile is lost.  An SQL source cannot be
held like that: stop writers (qmailadmin, vpopmaild) while converting away from SQL.

pw_uid: cdb writes 1 for a normal user and 2 for APOP, the SQL modules 0 and 1 (spec/sql.md §5,
§8.1).  The meaning is kept, not the digit, so a converted row is what `vadduser` on the target
writes (vconvert keeps the digit); other values are copied as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

from ..model import AssignEntry, VUser
from .dircontrol import DirControl

IMPORT_CHUNK = 20_000  # records per import_records call into an SQL module
_TO_SQL = {"1": "0", "2": "1"}
_TO_CDB = {"0": "1", "1": "2"}


def uid_for(uid: str, source: str, target: str) -> str:
    """The pw_uid a record carries in the target module (see the module docstring)."""
    if source == "cdb" and target != "cdb":
        return _TO_SQL.get(uid, uid)
    if source != "cdb" and target == "cdb":
        return _TO_CDB.get(uid, uid)
    return uid


def translated(records: Iterable[VUser], source: str, target: str,
               progress: Callable[[int], None] | None = None) -> Iterator[VUser]:
    """The source's records as the target stores them, streamed (a million users are never one list)."""
    n = 0
    for vu in records:
        new_uid = uid_for(vu.uid, source, target)
        if new_uid != vu.uid:
            vu = vu.replace(uid=new_uid)
        n += 1
        if progress is not None and n % 1000 == 0:
            progress(n)
        yield vu
    if progress is not None:
        progress(n)


def _record_key(vu: VUser, clear: bool) -> bytes:
    fields = (vu.name, vu.passwd, vu.uid, str(vu.gid), vu.gecos, vu.dir, vu.quota, (vu.clear or "") if clear else "")
    return "\0".join(fields).encode("utf-8", "surrogateescape")


class _Tally:
    """An order-independent digest of a set of records: their count and the sum of their hashes
    (mod 2^256), so two listings in different orders compare in constant memory."""

    __slots__ = ("count", "total")

    def __init__(self):
        self.count, self.total = 0, 0

    def add(self, key: bytes) -> None:
        self.count += 1
        self.total = (self.total + int.from_bytes(hashlib.blake2b(key, digest_size=32).digest(), "big")) % (1 << 256)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Tally) and (self.count, self.total) == (other.count, other.total)


def _dc_state(dc: DirControl, quirk: bool) -> tuple:
    """What must match of two counters; `quirk`: one side is cdb, whose reader keeps only two mod
    values (spec/store.md §6.1), so the third is not compared."""
    return (dc.cur_users, dc.level_cur, dc.level_max, list(dc.start), list(dc.end),
            list(dc.mod[:2]) if quirk else list(dc.mod), list(dc.index), dc.the_dir)


def sql_counter(dc: DirControl) -> DirControl:
    """A cdb counter as an SQL row holds it: vpopmail's cdb reader drops the third mod value
    (`0 2 4` reads back, and is rewritten, as `0 2 2`, spec/store.md §6.1), its SQL reader does
    not (spec/sql.md §8.9), so the row gets vpopmail's 4 -- what vadduser on MySQL writes --
    unless the third level is already in use (then hashing goes on as it did)."""
    if dc.level_cur < 2 and dc.mod[2] == dc.mod[1]:
        dc = dc.replace(mod=[dc.mod[0], dc.mod[1], DirControl().mod[2]])
    return dc


def copy_domain(source, target, entry: AssignEntry, progress: Callable[[int], None] | None = None,
                target_entry: AssignEntry | None = None) -> int:
    """Copy one domain's records, counter and lastauth records from `source` to `target` (auth
    modules); returns the number of records.  `target_entry`: the domain as the target sees it,
    when that is another tree (a copy of the store; the tests' cdb -> cdb)."""
    te = target_entry or entry
    target.delete_domain(te)  # what a half run left goes (SQL: rows, lastauth, dir_control)
    target.create_domain(te)
    dc = source.dir_control(entry)
    if source.name == "cdb" and target.name != "cdb":
        dc = sql_counter(dc)
    replace = getattr(target, "replace_records", None)
    if replace is not None:  # cdb: one vpasswd, written whole (its import_records merges)
        n = replace(te, translated(source.list_users(entry), source.name, target.name, progress), dc)
    else:  # SQL: a transaction per IMPORT_CHUNK records (bounded memory, progress that means rows)
        n = 0
        chunk: list[VUser] = []
        for vu in translated(source.list_users(entry), source.name, target.name):
            chunk.append(vu)
            if len(chunk) >= IMPORT_CHUNK:
                n += target.import_records(te, chunk, None)
                chunk = []
                if progress is not None:
                    progress(n)
        n += target.import_records(te, chunk, dc)
        if progress is not None:
            progress(n)
    if keeps_lastauth(source) and keeps_lastauth(target):
        target.import_lastauth(te, source.list_lastauth(entry))
    return n


def keeps_lastauth(module) -> bool:
    """cdb always has its lastauth files; an SQL module only in ENABLE_AUTH_LOGGING builds."""
    return module.name == "cdb" or bool(getattr(module.s, "auth_logging", True))


def verify_domain(source, target, entry: AssignEntry, clear: bool,
                  target_entry: AssignEntry | None = None) -> list[str]:
    """What differs between the source's and the target's records of a domain (empty: the same):
    every field of every record (pw_uid as the target stores it), the dir-control state, and the
    lastauth records when both modules keep them (those the target can hold)."""
    te = target_entry or entry
    problems: list[str] = []
    want, have = _Tally(), _Tally()
    for vu in translated(source.list_users(entry), source.name, target.name):
        want.add(_record_key(vu, clear))
    for vu in target.list_users(te):
        have.add(_record_key(vu, clear))
    if want != have:
        problems.append(_first_difference(source, target, entry, te, clear, want.count, have.count))
    quirk = "cdb" in (source.name, target.name)
    a, b = source.dir_control(entry), target.dir_control(te)
    if _dc_state(a, quirk) != _dc_state(b, quirk):
        problems.append(f"dir_control differs: {source.name} counts {a.cur_users} users at {a.the_dir!r}, "
                        f"{target.name} {b.cur_users} at {b.the_dir!r}")
    if keeps_lastauth(source) and keeps_lastauth(target):
        problem = _lastauth_difference(source, target, entry, te)
        if problem:
            problems.append(problem)
    return problems


def _lastauth_difference(source, target, entry: AssignEntry, te: AssignEntry) -> str | None:
    """Every lastauth record of the source that the target can hold is there, the same (whole
    seconds).  Records only the target has are not a difference: a cdb lastauth file of a name
    longer than an SQL lastauth row takes (32) stays where it is."""
    fits = getattr(target, "lastauth_fits", None)
    want = {user: (int(when), ip) for user, when, ip in source.list_lastauth(entry)
            if fits is None or fits(user, ip)}
    n = len(want)
    for user, when, ip in target.list_lastauth(te):
        if want.get(user) == (int(when), ip):
            del want[user]
    if want:
        user = min(want)
        return f"lastauth of {user} differs in {target.name} ({len(want)} of {n} records)"
    return None


def _first_difference(source, target, entry: AssignEntry, te: AssignEntry, clear: bool,
                      n_want: int, n_have: int) -> str:
    """The slow path once the digests differ: name the first record that does (holds one side)."""
    have = {vu.name: _record_key(vu, clear) for vu in target.list_users(te)}
    for vu in translated(source.list_users(entry), source.name, target.name):
        got = have.pop(vu.name, None)
        if got is None:
            return f"{vu.name} missing in {target.name} ({n_want} records in {source.name}, {n_have} in {target.name})"
        if got != _record_key(vu, clear):
            return f"record of {vu.name} differs in {target.name}"
    if have:
        return f"{min(have)} in {target.name} is not in {source.name}"
    return f"{n_want} records in {source.name}, {n_have} in {target.name}"


def _counter_owner(store):
    from .fsutil import Owner

    return Owner(store.s.vpopmail_uid, store.s.vpopmail_gid)


def copy_domain_counter(store, source, target) -> None:
    """The domain hashing counter of the vpopmail user (domains/.dir-control, or row dom_<uid>)."""
    owner = _counter_owner(store)
    dc = source.domain_counter(store.domains_dir, owner)
    if dc is not None:
        if source.name == "cdb" and target.name != "cdb":
            dc = sql_counter(dc)
        target.set_domain_counter(store.domains_dir, owner, dc)


def verify_domain_counter(store, source, target) -> str | None:
    owner = _counter_owner(store)
    a = source.domain_counter(store.domains_dir, owner)
    b = target.domain_counter(store.domains_dir, owner)
    quirk = "cdb" in (source.name, target.name)
    if a is not None and (b is None or _dc_state(a, quirk) != _dc_state(b, quirk)):
        return (f"the domain counter differs: {source.name} {a.cur_users} domains, "
                f"{target.name} {b.cur_users if b is not None else 'none'}")
    return None


# --- the whole run --------------------------------------------------------------------------------


def open_target(store, target: str, db_file: str | None = None):
    """A Store on the same site with the `target` module (SQL: its connection settings from
    `db_file`, else the site's etc/vpopmail.mysql|pgsql)."""
    from .store import Store

    s = store.s.replace(auth_module=target, sources=dict(store.s.sources), db=None)
    if target in ("mysql", "pgsql"):
        from ..site import read_db_file

        s.db = read_db_file(s.vpopmail_dir, target, store.warn, path=db_file)
        s.db_file = db_file
    return Store(s, store.warn, store.lock_wait)


def domains_to_convert(store, names: list[str] | None) -> tuple[list[AssignEntry], list[AssignEntry]]:
    """(the real domains to copy, every real domain of the site); a name may be an alias domain."""
    from ..errors import DomainNotFound

    every = [e for e in store.list_domains() if not e.is_alias]
    if not names:
        return every, every
    todo: dict[str, AssignEntry] = {}
    for name in names:
        entry = store.find_domain(name.lower())
        if entry is None:
            raise DomainNotFound(f"Domain does not exist: {name}")
        real = store.real_entry(entry.real)
        todo.setdefault(real.real, real)
    return list(todo.values()), every


# build options under which SQL and cdb keep more than the users in different places
_TABLE_OPTIONS = (("valias", "aliases (VALIAS)"), ("mysql_limits", "domain limits (ENABLE_MYSQL_LIMITS)"),
                  ("ip_alias_domains", "the ip map (IP_ALIAS_DOMAINS)"))


def convert(store, target_store, names: list[str] | None, switch: Callable[[], None],
            say: Callable[[str], None], progress_for: Callable[[str, int], Callable[[int], None] | None]
            = lambda domain, total: None) -> bool:
    """Copy, verify, and call `switch()` once every domain of the site is verified in the
    target; True when it switched.  A named subset is copied and verified; the switch then also
    needs the other domains verified (converted by an earlier run).  Problems in a domain this
    run copied raise VerifyFailed (nothing switched)."""
    from ..errors import UsageError, VerifyFailed
    from .fsutil import ContextStack

    source, target = store.auth, target_store.auth
    if source.name == target.name:
        raise UsageError(f"the site already uses the {source.name} module")
    tables = [label for flag, label in _TABLE_OPTIONS if getattr(store.s, flag, False)]
    if tables:
        raise UsageError(f"this site's build keeps {', '.join(tables)} in tables on SQL and in files on cdb; "
                         "vcli convert does not move those yet: nothing was changed")
    todo, every = domains_to_convert(store, names)
    clear = bool(store.s.clear_passwords)
    with ContextStack() as held:
        copied = 0
        for entry in todo:
            if source.name == "cdb":  # no change to a copied domain until the switch
                held.enter_context(source.domain_lock(entry))
            progress = progress_for(entry.real, source.user_count(entry))
            n = copy_domain(source, target, entry, progress)
            copied += n
            say(f"{entry.real}: {n} users copied to {target.name}")
        for entry in todo:  # alias domains: the aliasdomains rows Dovecot joins (vsavealiasdomains)
            for alias in store.aliases_of(entry.real):
                target.alias_domain_added(entry.real, alias)
        copy_domain_counter(store, source, target)
        bad: dict[str, list[str]] = {}
        problem = verify_domain_counter(store, source, target)
        if problem:
            raise VerifyFailed(f"{problem}; the {source.name} module stays in force (run vcli convert again)")
        for entry in every:
            problems = verify_domain(source, target, entry, clear)
            if problems:
                bad[entry.real] = problems
        done = {e.real for e in todo}
        mine = [d for d in bad if d in done]
        if mine:
            first = bad[mine[0]][0]
            raise VerifyFailed(f"{mine[0]}: {first}; the {source.name} module stays in force "
                               f"(run vcli convert again)")
        say(f"verified {len(every) - len(bad)} of {len(every)} domains in {target.name}")
        if bad:
            rest = sorted(bad)
            say(f"not switching: {len(rest)} domain(s) not (or no longer) the same in {target.name}: "
                + ", ".join(rest[:10]) + (" ..." if len(rest) > 10 else "")
                + f"; convert them too (vcli convert --to {target.name} DOMAIN ...)")
            return False
        switch()
        return True
