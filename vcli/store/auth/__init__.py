"""The auth-module interface: the only code that knows whether users live in a file or a table.

vpopmail splits its storage the same way: the `vauth_*` functions of vcdb.c / vmysql.c /
vpgsql.c hold the user records, the hashed-dir counters and lastauth; vpopmail.c does the
directories and qmail files once for every module.  Here the Store (vcli/store/store.py) is the
vpopmail.c part and validates every value (names, gecos, quotas, hashes, widths) before it asks
a module for anything; a module stores records, it does not judge them.

Entries are `vcli.model.AssignEntry` of the *real* domain (the Store resolves aliases).

## One change = one commit, owned by the module

A new user is a record *and* a tree on disk; a deleted user is a record gone *and* a home
removed; both move the hashed-dir counter (dir-control).  What must not happen is a record
without its tree, a tree without its record, or a counter that drifted.  The module owns that
step because how a change commits differs:

* cdb (`CdbAuth`): the commit point is the rename of vpasswd; the counter (`.dir-control`) and
  `.dir_control_free` are staged files of the same step; an intent record
  (vcli/store/intent.py) lets the next reader finish or undo a change killed half-way.
* SQL (`sql.py` shared, `mysql.py` / `pgsql.py` the dialects): one transaction on the update connection: the
  dir_control row read `FOR UPDATE` and bumped, the INSERT/UPDATE/DELETE of the user row, the
  lastauth row; the trees are made under their temp names (`intent.tmp_home`) *before* COMMIT
  and renamed in after it; a failed statement rolls back and the temp trees are removed.  A
  crash between COMMIT and the rename leaves a temp tree that `vcli check --repair` renames in
  (the record is there) -- the same rule the cdb replay uses.

So the write methods take everything the change needs (the validated NewUsers and the domain's
default quota; a change function; a name) and do the disk part through the Store's helpers
(`disk._make_user_dirs`, `disk._stage_maildirsize`, `disk._remove_tree`), inside their commit.

## What stays in the Store for every module

Domain dirs (the *domain* hashing counter is the module's: `domains/.dir-control` on cdb, the
`dom_<uid>` row of dir_control on SQL -- `take_domain_dir` / `release_domain_dir`), Maildirs, maildirsize, `.dir_control_free` (a file on every module),
users/assign + cdb, rcpthosts/virtualdomains, `.qmail-*` files, `.qmailadmin-limits` and the
locks of those files.  Build options that move those into tables are Settings flags, and the
Store calls the SQL module instead of the file code when the flag is set: SQL_ALIASDOMAINS
(`alias_domain_added` / `alias_domains_removed`, in the Protocol: a no-op on cdb),
ENABLE_MYSQL_LIMITS (`limits_get/set/delete`, when `has_limits_table`), VALIAS (`valias_*`),
IP_ALIAS_DOMAINS (`ipmap_*`) -- the last three exist on SqlAuth only (sql.py).
"""

from __future__ import annotations

from _collections_abc import (  # collections.abc without the collections package (start-up)
    Callable,
    Iterable,
    Iterator,
)

from ...errors import AuthModuleUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from ...model import AssignEntry, NewUser, VUser
    from ..dircontrol import DirControl
else:
    Protocol = object  # `typing` imports re: the lookup commands start without it (issue 11 item 4)

MODULES = ("cdb", "mysql", "pgsql")


class AuthModule(Protocol):
    """What the Store asks of a user database (vpopmail's vauth_* functions)."""

    name: str  # "cdb", "mysql", "pgsql"

    # reads (an SQL module: listings from the read server, the rest from the update server, §2.3)
    def get_user(self, entry: AssignEntry, user: str) -> VUser:
        """The record of `user` (lower case); UserNotFound when there is none."""

    def list_users(self, entry: AssignEntry) -> Iterator[VUser]:
        """Every user of the domain, streamed (a million-user domain must not be one list)."""

    def user_count(self, entry: AssignEntry) -> int:
        """The dir-control count (what vdominfo prints as users)."""

    def dir_control(self, entry: AssignEntry) -> DirControl:
        """The domain's hashed-dir counter (cdb: .dir-control; SQL: the dir_control row)."""

    def lastauth(self, entry: AssignEntry, user: VUser) -> tuple[float, str] | None:
        """(time, ip) of the last login, None if never (cdb: the lastauth file; SQL: the row)."""

    def set_lastauth(self, entry: AssignEntry, user: VUser, ip: str) -> None:
        """Record a good login, as vchkpw does."""

    # the user-database part of a domain
    def create_domain(self, entry: AssignEntry) -> None:
        """cdb: nothing; SQL: CREATE TABLE IF NOT EXISTS, the dir_control row (sql.md §4.2)."""

    def delete_domain(self, entry: AssignEntry) -> None:
        """cdb: the counter file; SQL: the domain's rows (users, dir_control, lastauth, ...)."""

    # the domain hashing counter (cdb: domains/.dir-control; SQL: dir_control row dom_<uid>)
    def check_new_domain(self, domain: str, others: list[str]) -> None:
        """Refuse, before vadddomain makes anything, a domain the module cannot hold (SQL without
        MANY_DOMAINS: a table name two domains share, `a-b.com` / `a.b.com`)."""

    def take_domain_dir(self, domains: str, owner, make: Callable[[str], str]) -> tuple[str, object]:
        """Advance the domain hashing counter and `make(hash_dir)` the domain's directory in the
        same step; (the directory, an undo token for release_domain_dir)."""

    def release_domain_dir(self, domains: str, owner, undo: object = None) -> None:
        """The counter one down (vdeldomain); `undo`: put back what take_domain_dir changed."""

    # alias domains (SQL_ALIASDOMAINS: the aliasdomains table Dovecot joins, sql.md §6)
    def alias_domain_added(self, real: str, alias: str) -> None:
        """vaddaliasdomain's row (cdb: nothing)."""

    def alias_domains_removed(self, names: list[str]) -> None:
        """vdeldomain's rows of these names, real or alias (cdb: nothing)."""

    # writes: each one commit, with its disk part (see the module docstring)
    def add_users(self, entry: AssignEntry, new_users: list[NewUser], default_quota: str, exist_ok: bool,
                  progress: Callable[[int], None] | None = None) -> list[VUser]:
        """Batch insert: homes from the free list, else the next hashed dir; UserExists unless
        exist_ok (then existing names are skipped).  Returns the records created."""

    def modify_user(self, entry: AssignEntry, user: str, change: Callable[[VUser], VUser], mode: int,
                    rebuild_index: bool = True, maildirsize: bool = False) -> VUser:
        """Replace one record by change(old); UserNotFound.  `maildirsize`: the quota changed, so
        Maildir/maildirsize follows in the same commit.  `mode`: vpasswd's mode (cdb only)."""

    def modify_users(self, entry: AssignEntry, changes: dict[str, Callable[[VUser], VUser]]
                     | Callable[[VUser], VUser], mode: int, rebuild_index: bool = True,
                     maildirsize: bool = False) -> list[VUser]:
        """modify_user of many in one commit (vmoduser/vsetuserquota DOMAIN): `changes` maps
        names to change functions (names not there are skipped), or is one function for every
        user.  The same records and files as one modify_user each, in vpasswd order."""

    def delete_user(self, entry: AssignEntry, user: str) -> VUser:
        """Record out, counter down, hashed dir onto the free list, home removed; returns the old record."""

    def delete_users(self, entry: AssignEntry, users: list[str]) -> list[VUser]:
        """delete_user of each in one commit (vdeloldusers); names not there are skipped."""

    def rebuild_index(self, entry: AssignEntry) -> str:
        """vmkpasswd: the module's lookup index rebuilt from its records (cdb: vpasswd.cdb); its path
        ('' on SQL: the server keeps the index, there is nothing to rebuild)."""

    # whole-domain moves (vcli convert, vcli/store/convert.py) and repairs (vcli check)
    def import_records(self, entry: AssignEntry, records: Iterable[VUser], dir_control: DirControl | None) -> int:
        """vconvert's target side: store `records` verbatim (their homes already exist, nothing is
        made on disk) and set the domain's hashed-dir counter to `dir_control` (None: leave it),
        all in one commit; a name already there -> UserExists and nothing is written.  Returns
        the number stored.  (vcli convert empties the domain first with delete_domain, and on cdb
        writes the whole vpasswd with CdbAuth.replace_records, so a rerun replaces a half run's.)"""

    def list_lastauth(self, entry: AssignEntry) -> Iterator[tuple[str, int, str]]:
        """(user, time, ip) of every lastauth record of the domain (whole seconds)."""

    def import_lastauth(self, entry: AssignEntry, rows: Iterable[tuple[str, int, str]]) -> int:
        """Store these lastauth records as they are (users the module does not hold, and records it
        cannot hold, are skipped); returns how many were written."""

    def recount_users(self, entry: AssignEntry) -> tuple[int, int]:
        """Set the dir-control count to the number of records, in one step; (was, now)."""

    def domain_counter(self, domains: str, owner) -> DirControl | None:
        """The domain hashing counter of `owner` (cdb: domains/.dir-control; SQL: row dom_<uid>);
        None when there is none yet (vcli convert)."""

    def set_domain_counter(self, domains: str, owner, dc: DirControl) -> None:
        """Set that counter as it is (vcli convert)."""

    def existing_users(self, entry: AssignEntry, names: list[str]) -> set[str]:
        """Which of `names` (lower case) the domain holds: the bulk import's check before it
        writes anything (cdb: an index read each; SQL: batched IN lists, not a query a name)."""

    def stored_domains(self) -> list[str]:
        """Domains the module holds records or counters of that live outside the domain dirs
        (SQL: the pw_domain / dir_control keys), for `vcli check` against users/assign."""

    def close(self) -> None:
        """Close the module's server connections now (cdb: nothing); a later call reconnects."""


def driver_missing(name: str, exc: ImportError) -> AuthModuleUnavailable:
    label = {"mysql": "MySQL", "pgsql": "PostgreSQL"}.get(name, name)
    return AuthModuleUnavailable(f"{label} auth module: its driver {exc.name or exc} is not installed "
                                 f"(pip install 'vcli[{name}]')")


def open_auth(store) -> AuthModule:
    """The module the site's settings name (vpopmail_config.h, config file, VCLI_AUTH_MODULE).
    An SQL module's driver is imported here only, on an SQL site."""
    name = getattr(store.s, "auth_module", "cdb") or "cdb"
    if name == "cdb":
        from .cdb import CdbAuth

        return CdbAuth(store)
    label = {"mysql": "MySQL", "pgsql": "PostgreSQL"}.get(name, name)
    where = getattr(store.s, "sources", {}).get("auth_module", "")
    said = f" (the site's {where} says {name})" if where else ""
    try:
        if name == "mysql":
            from .mysql import MysqlAuth

            return MysqlAuth(store)
        if name == "pgsql":
            from .pgsql import PgsqlAuth

            return PgsqlAuth(store)
    except ImportError as exc:  # the module (not in this version), or its driver, is missing
        if (exc.name or "").startswith("vcli."):
            raise AuthModuleUnavailable(f"{label} auth module not available in this version of vcli{said}") from None
        raise driver_missing(name, exc) from None
    raise AuthModuleUnavailable(f"{label} auth module not available in this version of vcli{said}")
