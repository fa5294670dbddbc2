"""One vpopmaild session: lines in, reply bytes out, exactly as the real daemon answers.

The transports (asyncio listener, stdio under tcpserver/inetd) only move lines;
every rule of the protocol — the pre-login budget, the three rights levels, the
reply forms and error codes, the two-reply mod_user — lives here, on top of the
same Store the commands use.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from contextlib import contextmanager

from .. import flags as F
from ..errors import (
    DomainNotFound,
    IpMapNotFound,
    LimitsUnreadable,
    StoreIOError,
    UsageError,
    UserNotFound,
    VcliError,
    VpopError,
    WeakPassword,
)

CRLF = b"\r\n"
PRELOGIN_BUDGET = 4
MAX_DRAIN_LINES = 100_000  # an unknown mod_user target drains input; cap it (the real daemon has none)


def ok() -> bytes:
    return b"+OK " + CRLF


def err(code: str, text: str) -> bytes:
    return f"-ERR {code} {text}".encode() + CRLF


def multi(lines: list[str]) -> bytes:
    return b"+OK+" + CRLF + b"".join(x.encode("utf-8", "surrogateescape") + CRLF for x in lines) + b"." + CRLF


MSG = {
    1: "Can't open authentication database", 3: "Read Timeout", 4: "Invalid Command",
    5: "Too many invalid login attempts", 6: "Email Address Required", 7: "Password Required", 8: "Invalid Login", 9: "Not Authorized", 10: "Invalid Email Address",
    11: "Not Authorized for domain", 12: "User does not exist", 13: "Domain Required", 14: "Alias Name Required",
    15: "Invalid Alias Name Supplied", 16: "Alias Line Required", 17: "Alias Insertion Failed",
    18: "Alias Removal Failed", 19: "Alias Deletion Failed", 20: "Invalid Directory.  .. not allowed in path",
    21: "Invalid Directory.  % not allowed in path", 22: "Invalid Directory.  Do you need a trailing '/'?",
    23: "Invalid Directory. Found / before @", 24: "Invalid Directory. Can't parse email address",
    25: "Invalid Directory. Unknown email address", 26: "Unauthorized Directory.", 27: "Directory Required.",
    28: "Source File Name Required", 29: "Destination File Name Required", 30: "Filename Required",
    31: "Could not open assign file", 32: "IP Required", 33: "Not Available", 34: "Could not get limits",
    35: "Could not set limits", 36: "Not Implemented yet",
    # used only by the ip map commands; vpopmaild's text table ends at 36 (it reads past the end)
    37: "IP Required", 38: "Invalid Domain",
}


def e(major: int, minor: int) -> bytes:
    return err(f"{major}.{minor}", MSG[major])


def lib(minor: int, exc: Exception, sep: str = ".") -> bytes:
    """`-ERR 0.<minor> <verror text>` for a store error."""
    text = exc.message if isinstance(exc, VcliError) else str(exc)
    return err(f"0{sep}{minor}", text)


# help rows: (level, text); a text in [] is a section heading
HELP_ROWS = [
    (2, "[Domain]"), (2, "user_info user_domain<crlf>"), (3, "list_domains [page per_page]<crlf>"),
    (3, "find_domain domain [per-page]<crlf>"), (3, "domain_count <crlf>"),
    (3, "add_alias_domain domain alias<crlf>"), (3, "add_domain domain postmaster-password<crlf>"),
    (3, "del_domain domain<crlf>"), (3, "dom_info domain<crlf>"), (2, "get_limits domain<crlf>"),
    (3, "set_limits domain (option lines)<crlf>.<crlf>"), (3, "del_limits domain<crlf>"),
    (2, "get_domain_size domain<crlf>"), (1, "[User]"), (2, "add_user user@domain password<crlf>"),
    (2, "del_user user@domain<crlf>"), (2, "user_count domain <crlf>"),
    (2, "list_users domain [page per_page]<crlf>"), (2, "list_users domain<crlf>"), (2, "list_lists domain<crlf>"),
    (1, "mod_user user@domain (option lines)<crlf>.<crlf>"), (1, "get_lastauth user@domain<crlf>"),
    (1, "get_user_size user@domain<crlf>"), (2, "[Alias]"), (2, "add_alias user@domain user@otherdomain<crlf>"),
    (2, "delete_alias user@domain<crlf>"), (2, "list_alias domain<crlf>"),
    (2, "remove_alias user@domain user@otherdomain<crlf>"), (1, "[File System]"),
    (1, "mk_dir /full/path/to/dir<crlf>"), (1, "rm_dir /full/path/to/dir<crlf>"),
    (1, "list_dir /full/path/to/dir<crlf>"), (1, "rm_file /full/path/to/file<crlf>"),
    (1, "rename_file /full/path/to/file<crlf>"), (1, "write_file /full/path (data lines)<crlf>.<crlf>"),
    (1, "read_file /full/path<crlf>"), (1, "stat_file /full/path<crlf>"), (1, "[IP Map]"),
    (1, "get_ip_map domain<crlf>"), (3, "add_ip_map ip domain<crlf>"), (3, "del_ip_map ip domain<crlf>"),
    (3, "show_ip_map domain<crlf>"), (2, "[Mailing List]"),
    (2, "add_list domain listname (command line options)<crlf>"), (2, "del_list domain listname<crlf>"),
    (2, "mod_list domain listname (command line options)<crlf>"), (0, "[Utility]"), (0, "exit quit"),
    (0, "quit quit"), (0, "q quit"), (0, "help help"),
]
PRELOGIN_HELP = ["", "Login", "login login user@domain password - expanded bitmaps",
                 "clogin login user@domain password - compact bitmapts",
                 "slogin login user@domain password - silent results", "", "Utility", "help help", "exit quit",
                 "quit quit", "q quit"]

# command -> table level
LEVELS = {
    "user_info": 2, "list_domains": 3, "find_domain": 3, "domain_count": 3, "add_alias_domain": 3,
    "add_domain": 3, "del_domain": 3, "dom_info": 3, "get_limits": 2, "set_limits": 3, "del_limits": 3,
    "get_domain_size": 2, "add_user": 2, "del_user": 2, "user_count": 2, "list_users": 2, "list_lists": 2,
    "mod_user": 1, "get_lastauth": 1, "get_user_size": 1, "add_alias": 2, "delete_alias": 2, "list_alias": 2,
    "remove_alias": 2, "mk_dir": 1, "rm_dir": 1, "list_dir": 1, "rm_file": 1, "rename_file": 1, "write_file": 1,
    "read_file": 1, "stat_file": 1, "get_ip_map": 1, "add_ip_map": 3, "del_ip_map": 3, "show_ip_map": 3,
    "add_list": 2, "del_list": 2, "mod_list": 2, "exit": 0, "quit": 0, "q": 0, "help": 0,
}
NOT_AVAILABLE = {"get_ip_map": "33.3004", "add_ip_map": "33.3106", "del_ip_map": "33.3205", "show_ip_map": "33.3302"}
NOT_IMPLEMENTED = {"add_list": "36.4001", "del_list": "36.4101", "mod_list": "36.4201"}
# The store's own files: never reached through the file commands (by name, after any leading
# dots: their temp files `.vpasswd.tmp.N` and locks `.vpasswd.lock` included).
STORE_STEMS = ("vpasswd", "dir-control", "dir_control_free", "vcli-intent")
LIMITS_STEM = "qmailadmin-limits"  # set_limits is system-admin only: so is its file
# programs a `|` line of a .qmail file written through the protocol may run (by basename) without
# system_admin_privileges or system_expert_privileges (`--qmail-programs` replaces the list)
QMAIL_PROGRAMS = ("autorespond", "vdelivermail", "ezmlm-send", "ezmlm-reject", "ezmlm-manage", "ezmlm-return",
                  "ezmlm-warn", "ezmlm-weed", "ezmlm-issubn", "ezmlm-gate", "ezmlm-tstdig", "ezmlm-request",
                  "ezmlm-store", "ezmlm-moderate", "ezmlm-clean", "ezmlm-idx")
MAX_DOT_QMAIL = 256 * 1024  # a .qmail file written through the protocol is checked whole, in memory
# a `|` line: the program, then words of characters /bin/sh takes literally, or '…' quoted
_PROGRAM_LINE = re.compile(r"([A-Za-z0-9_./+-]+)((?:[ \t]+(?:[A-Za-z0-9_./@%+=,:~-]|'[^']*')+)*)[ \t]*\Z")
_WORD = re.compile(r"(?:[A-Za-z0-9_./@%+=,:~-]|'[^']*')+")
_ADDRESS = re.compile(r"[A-Za-z0-9_.+=%@][A-Za-z0-9_.+=%@-]*\Z")  # a forward: nothing a shell or argv could read
CHANGES = {"add_alias_domain", "add_domain", "del_domain", "set_limits", "del_limits", "add_user", "del_user",
           "mod_user", "add_alias", "delete_alias", "remove_alias", "mk_dir", "rm_dir", "rm_file", "rename_file",
           "write_file", "add_ip_map", "del_ip_map"}

# get_limits / set_limits names -> Limits attribute
LIMIT_FIELDS = [
    ("max_popaccounts", "maxpopaccounts"), ("max_aliases", "maxaliases"), ("max_forwards", "maxforwards"),
    ("max_autoresponders", "maxautoresponders"), ("max_mailinglists", "maxmailinglists"),
    ("disk_quota", "quota"), ("max_msgcount", "maxmsgcount"), ("default_quota", "default_quota"),
    ("default_maxmsgcount", "default_maxmsgcount"), ("disable_pop", "disable_pop"),
    ("disable_imap", "disable_imap"), ("disable_dialup", "disable_dialup"),
    ("disable_password_changing", "disable_password_changing"), ("disable_webmail", "disable_webmail"),
    ("disable_external_relay", "disable_external_relay"), ("disable_smtp", "disable_smtp"),
    ("disable_spamassassin", "disable_spamassassin"), ("delete_spam", "delete_spam"),
    ("disable_maildrop", "disable_maildrop"), ("perm_account", "perm_account"), ("perm_alias", "perm_alias"),
    ("perm_forward", "perm_forward"), ("perm_autoresponder", "perm_autoresponder"),
    ("perm_maillist", "perm_maillist"), ("perm_quota", "perm_quota"), ("perm_defaultquota", "perm_defaultquota"),
]
SET_LIMIT_NAMES = dict(LIMIT_FIELDS) | {"perm_maillist_users": "perm_maillist_users",
                                        "perm_maillist_moderators": "perm_maillist_moderators"}


def words(line: str) -> list[str]:
    """A command line's words (space, TAB, CR, LF separate; other bytes are word characters)."""
    return [w for w in re.split(r"[ \t\r\n]+", line) if w]


def _split_option(line: str) -> tuple[str, str | None]:
    """`name value` option line of mod_user: first word (separators space, '=', ':'),
    value = the rest of the line after that single separator."""
    m = re.match(r"([^ =:]*)[ =:](.*)\Z", line, re.S)
    if not m:
        return line, None
    return m.group(1), m.group(2)


def _limit_tokens(line: str) -> tuple[str | None, str | None]:
    """set_limits option line: the first two words, separated by runs of space, '=' and ':'."""
    toks = [t for t in re.split(r"[ =:]+", line) if t]
    return (toks[0] if toks else None), (toks[1] if len(toks) > 1 else None)


def _atoi(text: str) -> int:
    """C atoi(): leading blanks, a sign, digits; what strtol() returns, cut to a 32-bit int."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?\d+)", text or "")
    if not m:
        return 0
    v = max(-(2**63), min(2**63 - 1, int(m.group(1))))
    v &= 0xFFFFFFFF
    return v - 2**32 if v >= 2**31 else v


class Session:
    """State of one connection.  feed() takes one input line (without its line end) and
    returns the reply bytes; `closed` turns True when the server ends the session."""

    def __init__(self, store, peer: str = "-", audit: Callable[[str], None] | None = None,
                 login_failed: Callable[[], None] | None = None, log: Callable[[str], None] | None = None,
                 qmail_programs: tuple[str, ...] | None = None, writer=None):
        self.store = store
        # add_user/mod_user/del_user go through `writer` (the Store's signatures): the listener's
        # group commit (commit.py), or the store itself
        self.writer = writer if writer is not None else store
        self.qmail_programs = frozenset(QMAIL_PROGRAMS if qmail_programs is None else qmail_programs)
        self.log = log or (lambda msg: None)
        self.peer = peer
        self.audit_sink = audit or (lambda line: None)
        self.on_login_failure = login_failed or (lambda: None)
        self.level = 0
        self.flags = 0
        self.compact = True
        self.login_user = ""
        self.login_domain = ""
        self.lines_before_login = 0
        self.failed_logins = 0
        self.failed_address = ""  # the address of the last failed login (the throttle's key at a shared peer)
        self.closed = False
        self.reader: Callable[[str, bytes], bytes] | None = None  # multi-line input in progress
        self.drained = 0
        self._open_file = None  # write_file in progress

    # --- plumbing ---------------------------------------------------------------

    def greeting(self) -> bytes:
        """`+OK `, or (no store to open) the C daemon's 1.101 and the end of the session."""
        if not os.path.isdir(self.store.root):
            self.closed = True
            return e(1, 101)
        return ok()

    def timeout_reply(self) -> bytes:
        return err("3.103" if self.level == 0 else "3.106", "Read Timeout")

    def audit(self, command: str, target: str, result: str) -> None:
        login = f"{self.login_user}@{self.login_domain}" if self.login_user else "-"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.audit_sink(f"{stamp} peer={self.peer} login={login} cmd={command} target={target or '-'} "
                        f"result={result}")

    def close(self) -> None:
        """The connection is gone: drop whatever multi-line input was in progress, unapplied."""
        self.reader = None
        if self._open_file is not None:
            self._open_file.close()
            self._open_file = None
        self.closed = True

    def may_write(self, raw: bytes) -> bool:
        """Whether feeding this line may change the store (and so wait for a lock): a command
        of CHANGES after login, or a line of a multi-line command in progress."""
        if self.reader is not None:
            return True
        if self.level == 0:
            return False
        head = raw.split(None, 1)
        return bool(head) and head[0].decode("latin-1").lower() in CHANGES

    def feed(self, raw: bytes) -> bytes:
        """One input line (its CR/LF ending, if any, included)."""
        if self.closed:
            return b""
        text = raw.decode("utf-8", "surrogateescape")
        if self.reader is not None:
            return self.reader(text, raw)
        # the C daemon's string functions stop at a NUL byte: the rest of the line is not seen
        line = text.split("\0", 1)[0].rstrip("\r\n")
        if self.level == 0:
            return self._prelogin(line)
        return self._command(line)

    # --- before login -------------------------------------------------------------

    def _prelogin(self, line: str) -> bytes:
        self.lines_before_login += 1
        out = self._prelogin_line(line)
        if self.level == 0 and not self.closed:
            if self.failed_logins >= PRELOGIN_BUDGET:
                out += err("5.105", MSG[5])
                self.closed = True
            elif self.lines_before_login >= PRELOGIN_BUDGET:
                out += err("5.102", MSG[5])
                self.closed = True
        return out

    def _prelogin_line(self, line: str) -> bytes:
        w = words(line)
        if not w:
            return b""
        verb = w[0].lower()
        if verb in ("quit", "exit", "q"):
            self.closed = True
            return ok()
        if verb == "help":
            return multi(PRELOGIN_HELP)
        if verb in ("login", "clogin", "slogin"):
            return self._login(verb, line)
        return e(4, 104)

    def _login(self, verb: str, line: str) -> bytes:
        m = re.match(r"[ \t]*[^ \t]+[ \t]+([^ \t]+)(?:[ \t](.*))?\Z", line, re.S)
        if not m:
            return e(6, 203)
        address, password = m.group(1), m.group(2)
        self.failed_address = address.lower()
        if not password:
            return e(7, 204)
        store = self.store
        try:
            user, domain = store.parse_address(address)
        except VcliError:
            return self._login_failed(205)
        try:
            vu = store.get_user(user, domain)
            real = store.real_entry(domain)
        except (UserNotFound, DomainNotFound, VpopError):
            return self._login_failed(206)
        except (VcliError, OSError) as exc:  # a corrupt or unreadable vpasswd.cdb: no login, say why in the log
            self.log(f"vpopmaild: login of {address}: {exc}")
            return self._login_failed(206)
        from ..store.passwords import verify_password

        if not verify_password(password, vu.passwd):
            # the account exists, so its name is no password typed into the wrong field: log it
            return self._login_failed(207, f"{vu.name}@{domain}")
        self.flags = vu.gid
        if vu.gid & F.SA_ADMIN:
            self.level = 3
        elif vu.gid & F.QA_ADMIN or vu.name == "postmaster":
            self.level = 2
            self.flags |= F.QA_ADMIN
        else:
            self.level = 1
        self.login_user, self.login_domain = vu.name, domain
        self.login_real = real.real
        self.compact = verb != "login"
        self.audit("login", f"{vu.name}@{domain}", "ok")
        if verb == "slogin":
            return ok()
        shown = vu.gid | (F.QA_ADMIN if self.level == 2 and not vu.gid & F.QA_ADMIN else 0)
        head = [f"vpopmail_dir {store.root}", f"domain_dir {real.dir}", f"uid {real.uid}", f"gid {real.gid}"]
        return multi(head + self._user_block(vu, shown))

    def _login_failed(self, minor: int, target: str = "-") -> bytes:
        self.failed_logins += 1
        self.audit("login", target, f"failed 8.{minor}")
        self.on_login_failure()
        return e(8, minor)

    # --- after login ----------------------------------------------------------------

    def _command(self, line: str) -> bytes:
        w = words(line)
        if not w:
            return b""
        verb = w[0].lower()
        level = LEVELS.get(verb)
        if level is None or level > self.level:
            return e(4, 107)
        if verb in ("quit", "exit", "q"):
            self.closed = True
            return ok()
        if verb == "help":
            return self._help()
        if verb in NOT_AVAILABLE and not self.store.s.ip_alias_domains:
            return err(NOT_AVAILABLE[verb], MSG[33])
        if verb in NOT_IMPLEMENTED:
            return err(NOT_IMPLEMENTED[verb], MSG[36])
        handler = getattr(self, "c_" + verb)
        try:
            reply = handler(w[1:], line)
        except VcliError as exc:  # e.g. a corrupt file or a busy lock: the session goes on
            self.reader = None
            reply = err("0.100", exc.message)
        except OSError as exc:
            self.reader = None
            reply = err("0.100", os.strerror(exc.errno or 5))
        except Exception as exc:  # noqa: BLE001 - a bug must cost one reply, not the session
            self.reader = None
            self.log(f"vpopmaild: internal error in {verb}: {exc!r}")
            reply = err("0.100", "internal error")
        if verb in CHANGES and self.reader is None:
            self.audit(verb, w[1] if len(w) > 1 else "", "ok" if reply.startswith(b"+OK") else
                       reply.decode("utf-8", "replace").strip())
        return reply

    def _help(self) -> bytes:
        lines: list[str] = []
        for lvl, text in HELP_ROWS:
            if lvl > self.level:
                continue
            if text.startswith("["):
                lines += ["", text[1:-1]]
            else:
                lines.append(text)
        return multi(lines)

    @property
    def is_sa(self) -> bool:
        return bool(self.flags & F.SA_ADMIN)

    @property
    def is_qa(self) -> bool:
        return bool(self.flags & (F.QA_ADMIN | F.SA_ADMIN))

    @property
    def can_override(self) -> bool:
        """SA, or a domain admin whose own flags hold override_domain_limits."""
        return self.is_sa or (self.is_qa and bool(self.flags & F.V_OVERRIDE))

    def _scope_ok(self, domain: str) -> bool:
        """A domain admin (not system admin) may only name its own login domain."""
        return self.is_sa or domain == self.login_domain

    def _user_block(self, vu, gid: int | None = None, listing: bool = False) -> list[str]:
        gid = vu.gid if gid is None else gid
        clear = vu.clear
        if clear is None:
            clear = "(null)" if listing and not self.store.s.clear_passwords else ""
        block = [f"name {vu.name}", f"comment {vu.gecos}", f"quota {vu.quota}", f"user_dir {vu.dir}",
                 f"encrypted_password {vu.passwd}", f"clear_text_password {clear}"]
        if self.compact:
            block.append(f"gidflags {gid}")
        else:
            block += [f"{f.field} {1 if gid & f.bit else 0}" for f in F.PROTO_ORDER]
        return block

    def _parse(self, address: str) -> tuple[str, str] | None:
        try:
            return self.store.parse_address(address)
        except VcliError:
            return None

    # --- domain commands ----------------------------------------------------------------

    def c_user_info(self, args, line):
        if not self.is_qa:
            return e(9, 601)
        if not args:
            return e(6, 602)
        parsed = self._parse(args[0])
        if parsed is None:
            return e(10, 603)
        user, domain = parsed
        if not self._scope_ok(domain):
            return e(11, 604)
        try:
            vu = self.store.get_user(user, domain)
        except (UserNotFound, DomainNotFound):
            return e(12, 605)
        return multi(self._user_block(vu))

    def _entries(self):
        try:
            return self.store.list_domains()
        except VcliError:
            return None

    @staticmethod
    def _page(args: list[str], n: int) -> range:
        page = per = 0
        if len(args) >= 2:
            page, per = max(_atoi(args[0]), 0), max(_atoi(args[1]), 0)
        if page > 0 and per > 0:
            return range((page - 1) * per, min(page * per, n))
        return range(n)

    def c_list_domains(self, args, line):
        if not self.is_sa:
            return e(9, 2301)
        entries = self._entries()
        if not entries:
            return e(31, 2302)
        return multi([f"{entries[i].real} {entries[i].name}" for i in self._page(args, len(entries))])

    def c_find_domain(self, args, line):
        if not self.is_sa:
            return e(9, 2401)
        if not args:
            return e(13, 2402)
        entries = self._entries()
        if not entries:
            return e(31, 2403)
        per = _atoi(args[1]) if len(args) > 1 else 0
        for i, entry in enumerate(entries):
            if entry.name == args[0]:
                return multi([f"page {i // per + 1}" if per > 0 else f"page {i + 1}"])
        return multi([])

    def c_domain_count(self, args, line):
        if not self.is_sa:
            return e(9, 2501)
        entries = self._entries()
        if entries is None:
            return e(31, 2502)
        return multi([f"count {len(entries)}"])

    def c_add_alias_domain(self, args, line):
        if not self.is_sa:
            return e(9, 1201)
        if not args:
            return e(13, 1202)
        if len(args) < 2:
            return e(14, 1203)
        try:
            self.store.add_alias_domain(args[0].lower(), args[1].lower())
        except VcliError as exc:
            return lib(1204, exc)
        return ok()

    def c_add_domain(self, args, line):
        if not self.is_sa:
            return e(9, 801)
        if not args:
            return e(13, 802)
        m = re.match(r"[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t](.*)\Z", line, re.S)
        password = m.group(1) if m else ""
        if not password:
            return e(7, 803)
        try:
            self.store.add_domain(args[0].lower(), password, postmaster_gecos="postmaster")
        except WeakPassword as exc:
            return lib(805, exc)
        except VpopError as exc:
            return lib(805 if exc.code in (-27, -31) else 804, exc)
        except VcliError as exc:
            return lib(804, exc)
        return ok()

    def c_del_domain(self, args, line):
        if not self.is_sa:
            return e(9, 1301)
        if not args:
            return e(13, 1302)
        try:
            self.store.del_domain(args[0].lower(), force=True)
        except VcliError as exc:
            return lib(1303, exc)
        return ok()

    def c_dom_info(self, args, line):
        if not self.is_sa:
            return e(9, 1401)
        if not args:
            return e(13, 1402)
        entries = self._entries()
        if entries is None:
            return err("0.1403", "can't read users/assign file")
        domain = args[0].lower()
        match = next((x for x in entries if x.name == domain), None)
        if match is None:
            return err("0.1404", "Domain does not exist")
        real = next((x for x in entries if x.name == match.real), match)
        lines = [f"domain {match.real}", f"path {real.dir}", f"uid {real.uid}", f"gid {real.gid}"]
        lines += [f"alias {x.name}" for x in entries if x.real == match.real and x.name != match.real]
        return multi(lines)

    def _limits(self, domain: str):
        try:
            if self.store.find_domain(domain) is None:
                return None
            return self.store.limits(domain)
        except (LimitsUnreadable, VcliError):
            return None

    def c_get_limits(self, args, line):
        if not self.is_sa:
            return e(9, 3401)
        if not args:
            return e(13, 3402)
        lim = self._limits(args[0].lower())
        if lim is None:
            return e(34, 3403)
        out = []
        for name, attr in LIMIT_FIELDS:
            value = getattr(lim, attr)
            if attr == "perm_quota":
                value = lim.perm_quota | (lim.perm_maillist_users << 3) | (lim.perm_maillist_moderators << 6)
            out.append(f"{name} {int(value)}")
        out.append(f"perm_defaultquota {lim.perm_defaultquota}")  # sent twice by the real daemon
        return multi(out)

    def c_set_limits(self, args, line):
        if not self.is_sa:
            return e(9, 3501)
        if not args:
            return e(13, 3502)
        domain = args[0].lower()
        lim = self._limits(domain)
        if lim is None:
            return e(34, 3505)

        def read(text: str, raw: bytes) -> bytes:
            body = text.rstrip("\r\n")
            if body.startswith("."):
                self.reader = None
                try:
                    self.store.set_limits(domain, lim)
                except (VcliError, OSError):
                    self.audit("set_limits", domain, "failed")
                    return e(35, 3504)
                self.audit("set_limits", domain, "ok")
                return ok()
            name, value = _limit_tokens(body)
            attr = SET_LIMIT_NAMES.get(name or "")
            if attr is None:
                return b"  Warning: invalid option" + CRLF
            if value is None:
                return b"  Warning: missing value" + CRLF
            current = getattr(lim, attr)
            setattr(lim, attr, bool(_atoi(value)) if isinstance(current, bool) else _atoi(value))
            return b""

        self.reader = read
        return ok()

    def c_del_limits(self, args, line):
        if not self.is_sa:
            return e(9, 3601)
        if not args:
            return e(13, 3602)
        try:
            self.store.del_limits(args[0].lower())
        except DomainNotFound:
            return err("0.3603", os.strerror(2) + ".")
        except OSError as exc:
            return err("0.3603", os.strerror(exc.errno or 5) + ".")
        return ok()

    def c_get_domain_size(self, args, line):
        if not self.is_qa:
            return b"-ERR 3901 not authorized" + CRLF
        if not args:
            return b"-ERR 3902 domain required" + CRLF
        domain = args[0].lower()
        if not self._scope_ok(domain):
            return b"-ERR 3903 not authorized for domain" + CRLF
        out, total_b, total_c = [], 0, 0
        if self.store.find_domain(domain) is not None:
            for vu in self.store.list_users(domain):
                u = self.store.user_usage(vu)
                out += [f"user {vu.name}@{domain}", f"size {u.bytes}", f"count {u.messages}"]
                total_b += u.bytes
                total_c += u.messages
        out += [f"domain {domain}", f"size {total_b}", f"count {total_c}"]
        return multi(out)

    # --- user commands --------------------------------------------------------------------

    def c_add_user(self, args, line):
        if not self.is_qa:
            return e(9, 301)
        if not args:
            return e(6, 302)
        parsed = self._parse(args[0])
        if parsed is None:
            return e(10, 303)
        user, domain = parsed
        if not self._scope_ok(domain):
            return e(11, 304)
        m = re.match(r"[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t](.*)\Z", line, re.S)
        password = m.group(1) if m else ""
        if not password:
            return e(7, 305)
        from ..model import NewUser

        if not domain:
            return err("0.305", "Invalid domain name")
        try:
            self.writer.add_user(domain, NewUser(user, password=password))
        except VcliError as exc:
            return lib(305, exc)
        return ok()

    def c_del_user(self, args, line):
        if not self.is_qa:
            return e(9, 401)
        if not args:
            return e(6, 402)
        parsed = self._parse(args[0])
        if parsed is None:
            return e(10, 403)
        user, domain = parsed
        if not self._scope_ok(domain):
            return e(9, 404)
        try:
            self.writer.del_user(user, domain)
        except VcliError as exc:
            return lib(405, exc, sep=",")
        return ok()

    def c_user_count(self, args, line):
        if not self.is_qa:
            return e(9, 2601)
        if not args:
            return e(13, 2602)
        domain = args[0].lower()
        if not self._scope_ok(domain):
            return e(11, 2603)
        n = sum(1 for _ in self.store.list_users(domain)) if self.store.find_domain(domain) else 0
        return multi([f"count {n}"])

    def c_list_users(self, args, line):
        if not self.is_qa:
            return e(9, 2701)
        if not args:
            return e(6, 2702)
        domain = args[0].lower()
        if not self._scope_ok(domain):
            return e(11, 2703)
        users = list(self.store.list_users(domain)) if self.store.find_domain(domain) else []
        window = self._page(args[1:], len(users))
        out: list[str] = []
        for i, vu in enumerate(users):
            if i >= window.stop:
                break
            if i in window:
                out += self._user_block(vu, listing=True)
            out.append("")
        return multi(out)

    def c_list_lists(self, args, line):
        if not self.is_qa:
            return e(9, 2901)
        if not args:
            return e(6, 2902)
        domain = args[0].lower()
        if not self._scope_ok(domain):
            return e(11, 2903)
        entry = self.store.find_domain(domain)
        if entry is None:
            return e(11, 2904)
        ddir = self.store.real_entry(domain).dir
        try:
            names = sorted(os.listdir(ddir), key=str.lower)
        except OSError as exc:
            return err("0.2905", os.strerror(exc.errno or 5))
        lists = []
        for name in names:
            if not name.startswith(".qmail-"):
                continue
            try:
                with open(os.path.join(ddir, name), "rb") as f:
                    if b"ezmlm-reject" in f.readline():
                        lists.append(name)
            except OSError:
                continue
        return multi([lists[i] for i in self._page(args[1:], len(lists))])

    def c_mod_user(self, args, line):
        if not args:
            return e(6, 501)
        parsed = self._parse(args[0])
        if parsed is None:
            return e(10, 502)
        user, domain = parsed
        if self.is_qa and not self.is_sa and domain != self.login_domain:
            return e(11, 503)
        if not self.is_qa and (user, domain) != (self.login_user, self.login_domain):
            return e(11, 504)
        target = self.store.find_user(user, domain) if self.store.find_domain(domain) else None
        if target is None:
            self.drained = 0

            def drain(text: str, raw: bytes) -> bytes:
                self.drained += 1
                if text in (".\n", ".\r\n") or self.drained > MAX_DRAIN_LINES:
                    self.reader = None
                    self.audit("mod_user", f"{user}@{domain}", "failed 12.505")
                    return e(12, 505)
                return b""

            self.reader = drain
            return b""
        from ..model import UserChanges

        ch = UserChanges()

        def read(text: str, raw: bytes) -> bytes:
            body = text.rstrip("\r\n")
            if body.startswith("."):
                self.reader = None
                return self._apply_mod(user, domain, target, ch)
            self._mod_option(body, ch, target, domain)
            return b""

        self.reader = read
        return ok()

    def _mod_option(self, body: str, ch, target, domain: str) -> None:
        name, value = _split_option(body)
        if value is None or value == "":
            return
        if name == "comment":
            ch.gecos = value
        elif name == "quota":
            if self.can_override:
                ch.quota = value
        elif name == "encrypted_password":
            ch.hashed, ch.password = value, None
        elif name == "clear_text_password":
            eff = self.store.effective_flags(target, self.store.real_entry(domain).real)
            if not eff & F.NO_PASSWD_CHNG:
                ch.password, ch.hashed = value, None
        elif name == "clear_all_flags":
            if self.can_override:
                ch.clear_flags, ch.set_flags, ch.unset_flags = True, 0, 0
        else:
            f = F.BY_FIELD.get(name)
            if f is None or value not in ("0", "1") or not self._may_set(f):
                return
            if value == "1":
                ch.set_flags |= f.bit
                ch.unset_flags &= ~f.bit
            else:
                ch.unset_flags |= f.bit
                ch.set_flags &= ~f.bit

    def _may_set(self, f) -> bool:
        if f.who == F.ANY:
            return True
        if f.who == F.OVERRIDE:
            return self.can_override
        if f.who == F.ADMIN:
            return self.is_qa
        return self.is_sa

    def _apply_mod(self, user: str, domain: str, target, ch) -> bytes:
        try:
            self.writer.mod_user(user, domain, ch)
        except VcliError as exc:
            self.audit("mod_user", f"{user}@{domain}", "failed")
            return lib(507, exc)
        self.audit("mod_user", f"{user}@{domain}", "ok")
        return ok()

    def _user_target(self, args, minors: tuple[int, int, int, int, int]):
        """Shared checks of get_lastauth-style commands: (user record, its domain, None) or
        (None, None, reply)."""
        need_admin, need_addr, bad_addr, scope, missing = minors
        if not self.is_qa:
            return None, None, e(9, need_admin)
        if not args:
            return None, None, e(6, need_addr)
        parsed = self._parse(args[0])
        if parsed is None:
            return None, None, e(10, bad_addr)
        user, domain = parsed
        if not self._scope_ok(domain):
            return None, None, e(11, scope)
        vu = self.store.find_user(user, domain) if self.store.find_domain(domain) else None
        if vu is None:
            return None, None, e(12, missing)
        return vu, domain, None

    def c_get_lastauth(self, args, line):
        vu, domain, reply = self._user_target(args, (3701, 3702, 3703, 3704, 3705))
        if reply:
            return reply
        auth = self.store.lastauth(vu, domain)  # an SQL site's lastauth row is keyed by the domain too
        if auth is None:
            return multi(["time 0", "ip (null)"])
        return multi([f"time {int(auth[0])}", f"ip {auth[1]}"])

    def c_get_user_size(self, args, line):
        if not self.is_qa:
            return b"-ERR 3801 not authorized" + CRLF
        if not args:
            return b"-ERR 3802 email_address required" + CRLF
        parsed = self._parse(args[0])
        if parsed is None:
            return b"-ERR 3803 invalid email address" + CRLF
        user, domain = parsed
        if not self._scope_ok(domain):
            return b"-ERR 3804 not authorized for domain" + CRLF
        vu = self.store.find_user(user, domain) if self.store.find_domain(domain) else None
        if vu is None:
            return b"-ERR 3805 user does not exist" + CRLF
        u = self.store.user_usage(vu)
        return multi([f"size {u.bytes}", f"count {u.messages}"])

    # --- aliases ------------------------------------------------------------------------

    def _alias_target(self, args, minors):
        need_admin, need_alias, bad, scope = minors
        if not self.is_qa:
            return None, e(9, need_admin)
        if not args:
            return None, e(14, need_alias)
        target = args[0].lower()
        if "@" not in target:
            return None, e(15, bad)
        alias, _, domain = target.rpartition("@")
        from ..model import check_user

        try:
            check_user(alias)
        except VcliError:
            return None, e(15, bad)
        if not self._scope_ok(domain):
            return None, e(11, scope)
        return (alias, domain), None

    def c_add_alias(self, args, line):
        t, reply = self._alias_target(args, (901, 902, 903, 904))
        if reply:
            return reply
        if len(args) < 2:
            return e(16, 906)
        try:
            self.store.add_alias_line(t[1], t[0], args[1], allow_duplicate=True)
        except VcliError:
            return e(17, 907)
        return ok()

    def c_remove_alias(self, args, line):
        t, reply = self._alias_target(args, (1001, 1002, 1003, 1004))
        if reply:
            return reply
        if len(args) < 2:
            return e(16, 1006)
        try:
            self.store.remove_alias_line(t[1], t[0], args[1])
        except VcliError:
            return e(18, 1007)
        return ok()

    def c_delete_alias(self, args, line):
        t, reply = self._alias_target(args, (1101, 1102, 1103, 1104))
        if reply:
            return reply
        try:
            self.store.delete_alias(t[1], t[0])
        except VcliError:
            return e(19, 1106)
        return ok()

    def c_list_alias(self, args, line):
        if not self.is_qa:
            return e(9, 2801)
        if not args:
            return e(13, 2802)
        arg = args[0]
        if not self.is_sa and arg != self.login_domain:  # the raw argument, as the C daemon compares it
            return e(11, 2804)
        target = arg.lower()
        if "@" in target:
            alias, _, domain = target.rpartition("@")
            parsed = self._parse(target)
            if parsed is None:
                return e(10, 2803)
            try:
                lines = self.store.alias_lines(domain, alias)
            except VcliError:
                lines = None
            if not lines:
                return b"." + CRLF
            return multi([f"{alias}@{domain} {x}" for x in lines])
        try:
            rows = self.store.list_aliases(target)
        except DomainNotFound:
            return b"+OK+" + CRLF + b"invalid domain, not in qmail assign file\n" + b"." + CRLF
        return multi([f"{a}@{target} {x}" for a, lines in rows for x in lines])

    # --- file system --------------------------------------------------------------------

    def _path(self, raw: str, allow_base: bool = False, modify: bool = True) -> tuple[str | None, bytes | None]:
        """The absolute path for a file-system command, inside what this login may touch.

        The argument rules and error codes are the C daemon's; the containment check is
        stricter: it compares real paths component-wise, so neither `example.test.evil/` next
        to `example.test/` nor a symlink leads out.  The top directory itself (a user's home,
        a domain's dir) may be listed or read but not removed or renamed (allow_base=False).
        No component may name one of the store's own files (`-ERR 9.1513`), and only a system
        admin may change a `.qmail-default` (`-ERR 9.1514`, modify=True).
        """
        if ".." in raw:
            return None, e(20, 1501)
        if "%" in raw:
            return None, e(21, 1502)
        store = self.store
        if raw.startswith("/"):
            path = raw
        else:
            if "/" not in raw:
                return None, e(22, 1503)
            head, _, rest = raw.partition("/")
            if "@" in raw and raw.index("@") > raw.index("/"):
                return None, e(23, 1504)
            if "@" in head:
                parsed = self._parse(head)
                if parsed is None:
                    return None, e(24, 1505)
                user, domain = parsed
                vu = store.find_user(user, domain) if store.find_domain(domain) else None
                if vu is None:
                    return None, e(25, 1506)
                if self.flags & F.QA_ADMIN:  # a domain admin, system admin or not: own domain only
                    if not domain.startswith(self.login_domain):
                        return None, e(11, 1507)
                elif not self.is_sa and (user, domain) != (self.login_user, self.login_domain):
                    return None, e(12, 1508)
                path = vu.dir.rstrip("/") + "/" + rest
            else:
                entry = store.find_domain(head.lower())
                if entry is None:
                    return None, e(11, 1509)
                path = store.real_entry(head.lower()).dir.rstrip("/") + "/" + rest
        base, minor = self._login_base()
        if not path.startswith(base):  # the C daemon's check (a string prefix)
            return None, e(26, minor)
        # ... and ours: by real path, so a symlink may not lead out of what this login may touch
        real_base = os.path.realpath(base)
        stripped = path.rstrip("/") or "/"
        if os.path.realpath(stripped) == real_base:
            return (real_base, None) if allow_base else (None, e(26, minor))
        candidate = os.path.join(os.path.realpath(os.path.dirname(stripped)), os.path.basename(stripped))
        if not _inside(candidate, real_base):
            return None, e(26, minor)
        if os.path.islink(candidate) and not _inside(os.path.realpath(candidate), real_base):
            return None, e(26, minor)  # a symlink that leads out: refused like any path outside
        reply = self._reserved(candidate, real_base, modify)
        if reply is None and os.path.islink(candidate):
            reply = self._reserved(os.path.realpath(candidate), real_base, modify)
        return (None, reply) if reply else (candidate, None)

    def _reserved(self, path: str, real_base: str, modify: bool) -> bytes | None:
        """The refusal when a component of path (below the base) is a store file, or, for a
        change by anyone but a system admin, a `.qmail-default`."""
        for comp in os.path.relpath(path, real_base).split("/"):
            if _store_file(comp, self.is_sa):
                return e(9, 1513)
            if modify and not self.is_sa and comp.lower() == ".qmail-default":
                return e(9, 1514)
        return None

    def _dot_qmail_refusal(self, data: bytes, directory: str) -> str | None:
        """Why a .qmail file in `directory` may not hold data, or None.

        Allowed: comments, blank lines, forwards (with or without `&`), mbox and Maildir paths
        that stay inside this login's tree and name no store or .qmail file, and `|` lines
        running a program of the allowlist with words /bin/sh takes literally (any `|` line for
        system_admin_privileges or system_expert_privileges: vpopmail's "edit .qmail files")."""
        if len(data) > MAX_DOT_QMAIL:
            return "too long"
        real_base = os.path.realpath(self._login_base()[0])
        expert = bool(self.flags & (F.SA_ADMIN | F.BY_NAME["SA_EXPERT"].bit))
        for raw in data.decode("utf-8", "surrogateescape").split("\n"):
            line = raw.rstrip("\r").rstrip(" \t")
            if not line or line.startswith("#"):
                continue
            if any(c < " " and c != "\t" or c == "\x7f" for c in line):
                return f"control character in line {line!r}"
            if line[0] in " \t":
                return f"line starts with a blank: {line!r}"
            if line[0] == "|":
                if expert:
                    continue
                why = self._program_refusal(line[1:].lstrip(" \t"), real_base)
                if why:
                    return why
            elif line[0] in "./":
                if not self._inside_tree(os.path.normpath(os.path.join(directory, line)), real_base):
                    return f"delivery path outside this login's tree: {line!r}"
            else:
                if not _ADDRESS.match(line[1:] if line[0] == "&" else line):
                    return f"not a forward address: {line!r}"
        return None

    def _program_refusal(self, command: str, real_base: str) -> str | None:
        m = _PROGRAM_LINE.match(command)
        if not m:
            return f"program line with shell syntax: {command!r}"
        program = m.group(1)
        if os.path.basename(program) not in self.qmail_programs:
            return f"program not allowed: {program!r}"
        if "/" in program and (not program.startswith("/") or _inside(
                os.path.realpath(program), os.path.realpath(self.store.root))):
            return f"program path not allowed: {program!r}"
        for word in _WORD.findall(m.group(2)):
            word = word.replace("'", "")
            if ".." in word.split("/") or word.startswith("/") and not self._inside_tree(word, real_base):
                return f"program argument outside this login's tree: {word!r}"
        return None

    def _inside_tree(self, path: str, real_base: str) -> bool:
        """path (absolute) resolves to the base or below it and names no store or .qmail file."""
        real = os.path.realpath(os.path.normpath(path))
        if real != real_base and not _inside(real, real_base):
            return False
        return not any(_store_file(c, False) or c.lower().startswith(".qmail")
                       for c in os.path.relpath(real, real_base).split("/"))

    def _login_base(self) -> tuple[str, int]:
        """The directory this login may touch, and the error minor of a path outside it."""
        store = self.store
        if self.is_sa:
            return os.path.join(store.root, "domains"), 1510
        if self.is_qa:
            return store.real_entry(self.login_domain).dir, 1511
        return store.get_user(self.login_user, self.login_domain).dir, 1512

    @contextmanager
    def _at(self, path: str):
        """(dir_fd, name) of a path `_path` approved, reached from the login's base one component
        at a time with O_NOFOLLOW: a directory swapped for a symlink after the check (a race with
        someone holding a shell on the store) makes the walk fail (ELOOP/ENOTDIR) instead of
        leading out.  For the base itself: (None, path)."""
        real_base = os.path.realpath(self._login_base()[0])
        if path == real_base:
            yield None, path
            return
        parts = os.path.relpath(path, real_base).split("/")
        fd = os.open(real_base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for comp in parts[:-1]:
                nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = nfd
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def c_mk_dir(self, args, line):
        if not args:
            return e(27, 1601)
        path, reply = self._path(args[0])
        if reply:
            return reply
        try:
            with self._at(path) as (fd, name):
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except OSError as exc:
                    return err("0.1602", os.strerror(exc.errno or 5))
                try:
                    if os.geteuid() == 0 and self.store.s.vpopmail_uid is not None:
                        os.chown(name, self.store.s.vpopmail_uid, self.store.s.vpopmail_gid, dir_fd=fd,
                                 follow_symlinks=False)
                except OSError as exc:
                    return err("0.1603", os.strerror(exc.errno or 5))
        except OSError as exc:
            return err("0.1602", os.strerror(exc.errno or 5))
        return ok()

    def c_rm_dir(self, args, line):
        if not args:
            return e(27, 1701)
        path, reply = self._path(args[0])
        if reply:
            return reply
        import shutil

        try:
            with self._at(path) as (fd, name):
                if not stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):  # a symlink is no directory to empty
                    raise NotADirectoryError(20, "Not a directory")
                for _top, dirs, files, _fd in os.fwalk(name, dir_fd=fd):  # a store file inside: refused
                    if any(_store_file(x, self.is_sa) or (not self.is_sa and x.lower() == ".qmail-default")
                           for x in dirs + files):
                        return e(9, 1703)
                shutil.rmtree(name, dir_fd=fd)  # fd-based: never follows a symlink inside
        except OSError as exc:
            return err("0.1702", os.strerror(exc.errno or 5))
        return ok()

    def c_list_dir(self, args, line):
        if not args:
            return e(27, 1801)
        path, reply = self._path(args[0], allow_base=True, modify=False)
        if reply:
            return reply
        try:
            with self._at(path) as (dfd, name):
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            return err("0.1802", os.strerror(exc.errno or 5))
        try:
            names = os.listdir(fd)
            out = []
            for name in names:
                try:
                    mode = os.lstat(name, dir_fd=fd).st_mode
                except OSError:
                    mode = 0
                out.append(f"{name} {_kind(mode)}")
        finally:
            os.close(fd)
        return multi(out)

    def c_rm_file(self, args, line):
        if not args:
            return e(30, 1901)
        path, reply = self._path(args[0])
        if reply:
            return reply
        try:
            with self._at(path) as (fd, name):
                os.unlink(name, dir_fd=fd)  # a directory: EISDIR; a symlink: the link goes, never its target
        except OSError as exc:
            return err("0.1902", os.strerror(exc.errno or 5))
        return ok()

    def c_rename_file(self, args, line):
        if not args:
            return b"-ERR 28.3801 Source File Name Required" + CRLF
        if len(args) < 2:
            return b"-ERR 29.3801 Destination File Name Required" + CRLF
        src, reply = self._path(args[0])
        if reply:
            return reply
        dst, reply = self._path(args[1])
        if reply:
            return reply
        try:
            with self._at(src) as (sfd, sname), self._at(dst) as (dfd, dname):
                if not _is_dot_qmail(dname):
                    os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
                    return ok()
                # into a delivery file: checked like write_file, and copied to a new file, so a
                # write_file still streaming into the source cannot add to it after the check
                fd = os.open(sname, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=sfd)
                with os.fdopen(fd, "rb") as f:
                    st = os.fstat(f.fileno())
                    data = f.read(MAX_DOT_QMAIL + 1) if stat.S_ISREG(st.st_mode) else None
                why = "not a regular file" if data is None else self._dot_qmail_refusal(data, os.path.dirname(dst))
                if why:
                    self.log(f"vpopmaild: rename_file {args[0]} {args[1]} refused: {why}")
                    return e(9, 3804)
                _replace(dfd, dname, data, st.st_mode & 0o666)
                os.unlink(sname, dir_fd=sfd)
        except OSError as exc:
            return err("0.3803", os.strerror(exc.errno or 5))
        return ok()

    def c_write_file(self, args, line):
        if not args:
            return e(30, 2001)
        path, reply = self._path(args[0])
        if reply:
            return reply
        if _is_dot_qmail(os.path.basename(path)):
            return self._write_dot_qmail(args[0], path)
        try:
            with self._at(path) as (dfd, name):
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o666 & ~_umask(), dir_fd=dfd)
        except OSError as exc:
            return err("0.2002", os.strerror(exc.errno or 5))
        f = self._open_file = os.fdopen(fd, "wb")
        failed: list[int] = []  # errno of a failed write (e.g. disk full), reported when the data ends

        def read(text: str, raw: bytes) -> bytes:
            if raw in (b".\r\n", b".\n", b"."):
                self.reader = self._open_file = None
                try:
                    f.close()
                except OSError as exc:
                    failed.append(exc.errno or 5)
                if failed:
                    self.audit("write_file", args[0], "failed")
                    return err("0.2002", os.strerror(failed[0]))
                self.audit("write_file", args[0], "ok")
                return ok()
            if not failed:
                try:
                    f.write(raw)
                except OSError as exc:
                    failed.append(exc.errno or 5)
            return b""

        self.reader = read
        return b""

    def _write_dot_qmail(self, arg: str, path: str) -> bytes:
        """write_file of a delivery file: the data is collected, checked whole, then put in
        place by rename (nothing changes when it is refused: `-ERR 9.2003`)."""
        try:
            with self._at(path) as (dfd, name):
                dirfd = os.dup(dfd)  # the directory reached now, as for any write_file
        except OSError as exc:
            return err("0.2002", os.strerror(exc.errno or 5))
        self._open_file = _Fd(dirfd)  # closed with the session if it ends before the data does
        chunks: list[bytes] = []
        size = [0]

        def read(text: str, raw: bytes) -> bytes:
            if raw not in (b".\r\n", b".\n", b"."):
                if size[0] <= MAX_DOT_QMAIL:
                    chunks.append(raw)
                    size[0] += len(raw)
                return b""
            self.reader = None
            data = b"".join(chunks)
            try:
                why = self._dot_qmail_refusal(data, os.path.dirname(path))
                if why:
                    self.log(f"vpopmaild: write_file {arg} refused: {why}")
                    self.audit("write_file", arg, "failed 9.2003")
                    return e(9, 2003)
                _replace(dirfd, name, data, 0o666)
            except OSError as exc:
                self.audit("write_file", arg, "failed")
                return err("0.2002", os.strerror(exc.errno or 5))
            finally:
                self._open_file.close()
                self._open_file = None
            self.audit("write_file", arg, "ok")
            return ok()

        self.reader = read
        return b""

    def c_read_file(self, args, line):
        if not args:
            return e(30, 2101)
        path, reply = self._path(args[0], modify=False)
        if reply:
            return reply
        try:
            with self._at(path) as (dfd, name):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            with os.fdopen(fd, "rb") as f:
                data = f.read()
        except OSError as exc:
            return err("0.2102", os.strerror(exc.errno or 5))
        out = [b"+OK+" + CRLF]
        lines = data.split(b"\n")
        for chunk in [x + b"\n" for x in lines[:-1]] + ([lines[-1]] if lines[-1] else []):
            body = chunk.rstrip(b"\r\n")
            out.append(b"." + chunk if body == b"." else chunk)
        end = b"." + CRLF if (not data or data.endswith(b"\n")) else CRLF + b"." + CRLF
        return b"".join(out) + end

    def c_stat_file(self, args, line):
        if not args:
            return e(30, 2201)
        path, reply = self._path(args[0], allow_base=True, modify=False)
        if reply:
            return reply
        try:
            with self._at(path) as (fd, name):
                st = os.lstat(name, dir_fd=fd)
        except OSError as exc:
            return err("0.2202", os.strerror(exc.errno or 5))
        return b"+OK+" + CRLF + f"uid: {st.st_uid}".encode() + b"\n" + b"." + CRLF

    # --- ip map (IP_ALIAS_DOMAINS builds: etc/ip_alias_map) ------------------------------

    def c_get_ip_map(self, args, line):
        if not self.is_sa:
            return e(9, 3001)
        if not args:
            return e(37, 3002)
        try:
            domain = self.store.get_ip_map(args[0])
        except UsageError:  # not an IP address: no line can match
            domain = None
        if domain is None:
            return err("0.3003", "error")
        return multi([f"{args[0]} {domain}"])

    def c_add_ip_map(self, args, line):
        if not self.is_sa:
            return e(9, 3101)
        if not args:
            return e(32, 3102)
        if len(args) < 2:
            return e(13, 3103)
        if self.store.find_domain(args[1]) is None:
            return e(38, 3104)
        try:
            self.store.add_ip_map(args[0], args[1])
        except (UsageError, DomainNotFound, StoreIOError):
            return err("0.3105", "error")
        return ok()

    def c_del_ip_map(self, args, line):
        if not self.is_sa:
            return e(9, 3201)
        if not args:
            return e(37, 3202)
        if len(args) < 2:
            return e(13, 3203)
        try:
            self.store.del_ip_map(args[0], args[1])
        except IpMapNotFound:  # an absent pair is no failure while the file is there (vpopmail)
            if not os.path.exists(self.store.ip_map_path):
                return err("0.3204", "error")
        except (UsageError, StoreIOError):
            return err("0.3204", "error")
        return ok()

    def c_show_ip_map(self, args, line):
        if not self.is_sa:
            return e(9, 3301)
        return multi([f"{ip} {domain}" for ip, domain in self.store.ip_maps()])


def _store_file(name: str, sa: bool) -> bool:
    """name is one of the store's own files (vpasswd*, the cdb, .dir-control, .dir_control_free,
    .vcli-intent, their temp files and locks; .qmailadmin-limits unless sa)."""
    low = name.lower()
    stem = low.lstrip(".")
    if stem.startswith(STORE_STEMS):
        return True
    if stem.startswith(LIMITS_STEM):
        return not sa
    return low.startswith(".") and low.endswith(".lock")


def _is_dot_qmail(name: str) -> bool:
    """A delivery file qmail-local or vdelivermail reads: `.qmail`, `.qmail-<ext>`."""
    low = name.lower()
    return low == ".qmail" or low.startswith(".qmail-")


def _inside(path: str, base: str) -> bool:
    """path is below base (component-wise; base itself does not count)."""
    return path.startswith(base.rstrip("/") + "/") and path != base


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISCHR, "chardev"),
                       (stat.S_ISBLK, "blkdev"), (stat.S_ISFIFO, "fifo"), (stat.S_ISLNK, "link"),
                       (stat.S_ISSOCK, "sock")):
        if test(mode):
            return name
    return "unknown"


class _Fd:
    def __init__(self, fd: int):
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _replace(dirfd: int, name: str, data: bytes, mode: int) -> None:
    """name in dirfd holds data, swapped in whole by rename (mode & ~umask, as write_file)."""
    tmp = f".{name}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode & ~_umask(),
                 dir_fd=dirfd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dirfd)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
