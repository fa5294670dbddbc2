"""The value types every layer passes around, and the name rules (no I/O here).

The CLI, the daemon, the remote client and every store/auth module exchange these;
none of them owns this module.  Codecs of one storage format (the vpasswd line,
the users/assign line, the `.qmailadmin-limits` text) stay next to the type only
where they are pure functions of it (`VUser.to_line`, `AssignEntry.line`,
`Limits.parse/dump`).
"""

from __future__ import annotations

from . import flags
from .errors import IllegalUsername, InvalidDomain, TooLong, VpopError
from .record import factory, record

MAX_GECOS = 64
MAX_DIR = 160

# --- users ---------------------------------------------------------------------------------------


@record
class VUser:
    name: str
    passwd: str = ""
    uid: str = "1"  # 1 = POP, 2 = APOP; kept verbatim
    gid: int = 0  # the flag bitmap
    gecos: str = ""
    dir: str = ""
    quota: str = "NOQUOTA"
    clear: str | None = None  # 8th field, clear-passwd builds only

    def to_line(self, clear_passwords: bool) -> bytes:
        fields = [self.name, self.passwd, self.uid, str(self.gid), self.gecos, self.dir, self.quota]
        if clear_passwords:
            fields.append(self.clear or "")
        return (":".join(fields) + "\n").encode("utf-8", "surrogateescape")

    def as_dict(self) -> dict:
        return {n: getattr(self, n) for n in self._fields}


@record
class NewUser:
    """One account to create (add_user / bulk add)."""

    user: str
    password: str | None = None  # clear text
    hashed: str | None = None  # already encrypted (migrations, vadduser -e)
    gecos: str | None = None
    quota: str | None = None  # None: the domain default
    apop: bool = False


@record
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


@record
class DomainInfo:
    entry: AssignEntry  # the users/assign entry of the domain asked for
    users: int
    aliases: list[str] = factory(list)


@record
class UserUsage:
    bytes: int
    messages: int
    percent: int | None  # None when the quota is NOQUOTA



# --- domains -------------------------------------------------------------------------------------


@record(frozen=True)
class AssignEntry:
    name: str  # the domain (real or alias)
    real: str
    uid: int
    gid: int
    dir: str

    @property
    def is_alias(self) -> bool:
        return self.name != self.real

    def line(self) -> bytes:
        return f"+{self.name}-:{self.real}:{self.uid}:{self.gid}:{self.dir}:-::\n".encode()



# --- limits --------------------------------------------------------------------------------------

INT_KEYS = ("maxpopaccounts", "maxaliases", "maxforwards", "maxautoresponders", "maxmailinglists")
U64_KEYS = ("quota", "maxmsgcount", "default_quota", "default_maxmsgcount")
# disable_* keywords in the order vpopmail writes them
BOOL_KEYS = (
    "disable_pop", "disable_imap", "disable_dialup", "disable_password_changing", "disable_webmail",
    "disable_external_relay", "disable_smtp", "disable_spamassassin", "delete_spam", "disable_maildrop",
)
PERM_KEYS = ("perm_account", "perm_alias", "perm_forward", "perm_autoresponder", "perm_quota", "perm_defaultquota")


@record
class Limits:
    maxpopaccounts: int = -1
    maxaliases: int = -1
    maxforwards: int = -1
    maxautoresponders: int = -1
    maxmailinglists: int = -1
    quota: int = 0
    maxmsgcount: int = 0
    default_quota: int = 0
    default_maxmsgcount: int = 0
    disable_pop: bool = False
    disable_imap: bool = False
    disable_dialup: bool = False
    disable_password_changing: bool = False
    disable_webmail: bool = False
    disable_external_relay: bool = False
    disable_smtp: bool = False
    disable_spamassassin: bool = False
    delete_spam: bool = False
    disable_maildrop: bool = False
    perm_account: int = 0
    perm_alias: int = 0
    perm_forward: int = 0
    perm_autoresponder: int = 0
    perm_maillist: int = 0
    perm_maillist_users: int = 0
    perm_maillist_moderators: int = 0
    perm_quota: int = 0
    perm_defaultquota: int = 0

    @classmethod
    def parse(cls, data: bytes) -> Limits:
        lim = cls()
        for raw in data.replace(b"\r", b"\n").split(b"\n"):
            line = raw.decode("latin-1")
            if not line or line.startswith("#"):
                continue
            name, value = _keyword(line)
            if name in INT_KEYS or name in U64_KEYS:
                setattr(lim, name, _atoi(value))
            elif name in BOOL_KEYS:
                setattr(lim, name, True)
            elif name in PERM_KEYS:
                setattr(lim, name, _atoi(value) & 7)
            elif name == "perm_maillist":
                v = _atoi(value)
                lim.perm_maillist, lim.perm_maillist_users, lim.perm_maillist_moderators = v & 7, (v >> 3) & 7, (v >> 6) & 7
        return lim

    def dump(self) -> bytes:
        """The file exactly as vpopmail's vset_limits writes it (perm_quota bug included)."""
        out = [f"{k}: {getattr(self, k)}" for k in INT_KEYS + U64_KEYS]
        out += [k for k in BOOL_KEYS if getattr(self, k)]
        out += [f"{k}: {getattr(self, k)}" for k in ("perm_account", "perm_alias", "perm_forward", "perm_autoresponder")]
        out.append(f"perm_maillist: {self.perm_maillist & 7}")
        out.append(
            f"perm_quota: {self.perm_quota | (self.perm_maillist_users << 3) | (self.perm_maillist_moderators << 6)}"
        )
        out.append(f"perm_defaultquota: {self.perm_defaultquota}")
        return ("\n".join(out) + "\n").encode()

    def flag_mask(self) -> int:
        """gid bits the domain ORs into every user's effective flags."""
        mask = 0
        for f in flags.LIMIT_FLAGS:
            if getattr(self, f.limits_key):
                mask |= f.bit
        return mask

    def as_dict(self) -> dict:
        return {n: getattr(self, n) for n in self._fields}


def _keyword(line: str) -> tuple[str, str]:
    """`name[ \\t:]*value`: the keyword up to the first blank or colon, the rest after them."""
    n, i = len(line), 0
    while i < n and line[i] not in " \t:":
        i += 1
    j = i
    while j < n and line[j] in " \t:":
        j += 1
    return line[:i], line[j:]


def _atoi(text: str) -> int:
    """C atoi: leading blanks, a sign, digits; 0 when there are none (str methods, not re)."""
    n, i = len(text), 0
    while i < n and text[i].isspace():
        i += 1
    j = i + 1 if i < n and text[i] in "+-" else i
    k = j
    while k < n and text[k].isdecimal():
        k += 1
    return int(text[i:k]) if k > j else 0


# --- name rules (spec/store.md §12) --------------------------------------------------------------
# vpopmail accepts some names that are dangerous as path components (`..`, names with `/`, a
# leading `-` or `.`); vcli refuses them with the same "Illegal username" error, because they are
# the path-traversal holes of the C tools.

# Bytes vpopmail allows in a user name, minus '/' (a path separator for us).
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyz"
_USER_CHARS = frozenset("!#$&'*+-.=?^_`{|}~" + _ALNUM + _ALNUM.upper())
_DOMAIN_CHARS = frozenset(".-" + _ALNUM + _ALNUM.upper())
_LABEL_CHARS = frozenset("-" + _ALNUM)


def _only(text: str, allowed: frozenset) -> bool:
    """text is non-empty and made of `allowed` only (sets, not re: re costs start-up time)."""
    return bool(text) and allowed.issuperset(text)


def _label_ok(lab: str) -> bool:
    return _only(lab, _LABEL_CHARS) and lab[0] != "-" and lab[-1] != "-"
MAX_ADDRESS = 156
MAX_DOMAIN = 96


def split_address(address: str, default: str = "") -> tuple[str, str]:
    """(user, domain) as vpopmail's parse_email splits it: lower-cased, '@' then '%' then '/'."""
    text = address.lower()[:MAX_ADDRESS]
    for sep in "@%/":
        if sep in text:
            user, _, domain = text.partition(sep)
            return user, domain
    return text, default


def check_user(user: str, max_len: int = 64) -> str:
    """Validate a (lower-cased) local part; raise IllegalUsername or TooLong."""
    if not user.isascii() or not _only(user, _USER_CHARS):
        raise IllegalUsername()
    if len(user) > max_len:
        raise TooLong(f"user name too long (max={max_len})", -25)
    if user.startswith(("-", ".")) or ".." in user:
        raise IllegalUsername()
    return user


def check_new_user(user: str, max_len: int = 64) -> str:
    """check_user plus what only account creation refuses: 1-char names and `vpasswd`."""
    check_user(user, max_len)
    if len(user) < 2 or user == "vpasswd":
        raise IllegalUsername()
    return user


def check_domain_chars(domain: str) -> str:
    """The character-set check every tool applies to a domain name."""
    if not domain or not domain.isascii() or not _only(domain, _DOMAIN_CHARS):
        raise InvalidDomain()
    if len(domain) > MAX_DOMAIN:
        raise TooLong(f"domain name too long (max={MAX_DOMAIN})", -26)
    if ".." in domain or domain.startswith(("-", ".")):
        raise InvalidDomain()
    return domain


def check_new_domain(domain: str) -> str:
    """vadddomain's stricter rules: >= 3 chars, a dot, TLD 2-63 chars, sane labels."""
    domain = check_domain_chars(domain.lower())
    if len(domain) < 3 or "." not in domain or domain.endswith(("-", ".")):
        raise InvalidDomain()
    labels = domain.split(".")
    if not 2 <= len(labels[-1]) <= 63 or not all(_label_ok(lab) and len(lab) <= 63 for lab in labels):
        raise InvalidDomain()
    return domain


def parse_address(address: str, default: str = "", max_user: int = 64) -> tuple[str, str]:
    """Split and validate an address; every failure is vpopmail's "Illegal username"."""
    if any(c in address for c in "\0\n\r"):
        raise IllegalUsername()
    user, domain = split_address(address, default)
    check_user(user, max_user)
    if domain:
        try:
            check_domain_chars(domain)
        except VpopError as exc:
            if isinstance(exc, TooLong):
                raise
            raise IllegalUsername() from None
    return user, domain
