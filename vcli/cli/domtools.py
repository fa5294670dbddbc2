"""vmoddomlimits, vdeloldusers and vpopbull (issue 12 items 3-5): the work, and the classic front ends.

The Typer subcommands (app.py) call the same functions.  Kept free of typer so the classic
entry points, run from cron, start fast.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
from dataclasses import dataclass, field

from ..errors import DomainNotFound, LimitsUnreadable, StoreIOError, UsageError
from ..store import quota as Q
from ..store.fsutil import Owner, make_dir
from ..store.limits import INT_KEYS, Limits
from . import actions as A
from .common import VERSION, guard_std_fds, open_store, print_lines, run

# --- vmoddomlimits ----------------------------------------------------------------

# -g letters -> Limits field; the order is the one -S lists them in
GID_LETTERS = {"i": "disable_imap", "s": "disable_smtp", "p": "disable_pop", "w": "disable_webmail",
               "d": "disable_password_changing", "r": "disable_external_relay", "u": "disable_dialup",
               "c": "disable_spamassassin", "x": "delete_spam", "m": "disable_maildrop"}
GID_NAMES = {"i": "NO_IMAP", "s": "NO_SMTP", "p": "NO_POP", "w": "NO_WEBMAIL", "d": "NO_PASSWD_CHNG",
             "r": "NO_RELAY", "u": "NO_DIALUP", "c": "NO_SPAMASSASSIN", "x": "DEL_SPAM", "m": "NO_MAILDROP"}
PERM_BITS = {"a": 7, "c": 1, "m": 2, "d": 4}
# perm option letter -> (Limits field, -S label)
PERM_OPTIONS = {"p": ("perm_account", "pop account"), "a": ("perm_alias", "alias"),
                "f": ("perm_forward", "forward"), "r": ("perm_autoresponder", "autoresponder"),
                "l": ("perm_maillist", "mailinglist"), "u": ("perm_maillist_users", "mailinglist users"),
                "o": ("perm_maillist_moderators", "mailinglist moderators"), "x": ("perm_quota", "quota"),
                "z": ("perm_defaultquota", "default quota")}
COUNT_OPTIONS = {"P": "maxpopaccounts", "A": "maxaliases", "F": "maxforwards", "R": "maxautoresponders",
                 "L": "maxmailinglists"}
U64_OPTIONS = {"Q": "quota", "M": "maxmsgcount", "m": "default_maxmsgcount"}


@dataclass
class LimitChanges:
    """What vmoddomlimits' setting options ask for; None = keep the current value."""

    counts: dict[str, str] = field(default_factory=dict)  # Limits field -> text (-P -A -F -R -L)
    sizes: dict[str, str] = field(default_factory=dict)  # quota / maxmsgcount / default_maxmsgcount
    default_quota: str | None = None  # -q, quota syntax
    gid_flags: str | None = None  # -g letters (replaces all ten flags)
    perms: dict[str, str] = field(default_factory=dict)  # Limits field -> letters

    def empty(self) -> bool:
        return not (self.counts or self.sizes or self.perms) and self.default_quota is None and self.gid_flags is None


def _number(text: str, what: str, signed: bool) -> int:
    """A count as vmoddomlimits takes it, but refused (not read as 0) when it is not a number."""
    t = text.strip()
    body = t[1:] if signed and t[:1] in "+-" else t
    if not body.isdigit():
        raise UsageError(f"bad number for {what}: {text!r}")
    n = int(t)
    if signed and not -1 <= n <= 2**31 - 1:
        raise UsageError(f"bad number for {what}: {text!r} (want -1 for unlimited, or 0 .. 2147483647)")
    if not signed and n >= 2**64:
        raise UsageError(f"bad number for {what}: {text!r}")
    return n


def _letters(text: str, allowed: str, what: str) -> str:
    bad = sorted({c for c in text if c not in allowed})
    if bad:
        raise UsageError(f"unknown flag letter {bad[0]!r} for {what} (want some of {allowed})")
    return text


def apply_limit_changes(lim: Limits, ch: LimitChanges) -> Limits:
    """The new limits; every value is checked first, so a bad one changes nothing."""
    new = Limits(**lim.as_dict())
    for key, text in ch.counts.items():
        setattr(new, key, _number(text, key, signed=True))
    for key, text in ch.sizes.items():
        setattr(new, key, _number(text, key, signed=False))
    if ch.default_quota is not None:
        text = ch.default_quota.strip()
        size = 0 if text == "NOQUOTA" else Q.limits_of(Q.normalize(text))[0] if text else 0
        if text != "NOQUOTA" and (not text[:1].isdigit() or (size == 0 and text.rstrip("MmKkBbSs").strip("0"))):
            raise UsageError(f"bad quota for default_quota: {ch.default_quota!r} (e.g. 10485760 or 10M)")
        new.default_quota = size
    if ch.gid_flags is not None:
        _letters(ch.gid_flags, "".join(GID_LETTERS), "-g")
        for letter, key in GID_LETTERS.items():
            setattr(new, key, letter in ch.gid_flags)
    for key, text in ch.perms.items():
        _letters(text, "acmd", key)
        bits = 0
        for c in text:
            bits |= PERM_BITS[c]
        setattr(new, key, bits)
    return new


def _zero_based(data: bytes) -> Limits:
    """vlimits.default as `vmoddomlimits -d` reads it: counts the file leaves out are 0, not -1."""
    return Limits.parse(b"".join(f"{k}: 0\n".encode() for k in INT_KEYS) + data)


def read_default_limits(store) -> Limits:
    from ..store.fsutil import read_bytes

    path = _local(store, "vmoddomlimits -d").default_limits_path()
    data = read_bytes(path)
    if data is None:
        raise A.ClassicError("Failed to read the vlimits.default file.", 255, prefix="")
    return _zero_based(data)


def limits_show_lines(lim: Limits, header: str) -> list[str]:
    """`vmoddomlimits -S`, line for line (spec/tools.md §13)."""
    out = [header, "--",
           f"Max Pop Accounts: {lim.maxpopaccounts}", f"Max Aliases: {lim.maxaliases}",
           f"Max Forwards: {lim.maxforwards}", f"Max Autoresponders: {lim.maxautoresponders}",
           f"Max Mailinglists: {lim.maxmailinglists}", "GID Flags:"]
    letters = ""
    for letter, key in GID_LETTERS.items():
        if getattr(lim, key):
            out.append(f"  {GID_NAMES[letter]}")
            letters += letter
    out += [f"Flags (for commandline): {letters}", "Flags for non postmaster accounts:"]
    for key, label in PERM_OPTIONS.values():
        bits = getattr(lim, key)
        words = [("DENY_" if bits & bit else "ALLOW_") + word for bit, word in ((1, "CREATE"), (2, "MODIFY"),
                                                                               (4, "DELETE"))]
        out.append(f"  {label + ':':<24}" + "".join(f"{w:<12} " for w in words))
    out += [f"Domain Quota: {lim.quota} MB", f"Default User Quota: {lim.default_quota} bytes",
            f"Max Domain Messages: {lim.maxmsgcount}", f"Default Max Messages per User: {lim.default_maxmsgcount}"]
    return out


def limits_dict(lim: Limits, name: str) -> dict:
    d = {"domain": name}
    d.update(lim.as_dict())
    d["flags"] = "".join(letter for letter, key in GID_LETTERS.items() if getattr(lim, key))
    return d


def _local(store, what: str):
    if not hasattr(store, "default_limits_path"):
        raise UsageError(f"{what} works on the local store only")
    return store


def domain_limits(store, domain: str) -> Limits:
    store.domain(domain)  # an unknown domain: "Domain does not exist", not the defaults
    try:
        return store.limits(domain)
    except LimitsUnreadable:
        raise A.ClassicError("Failed to vget_limits", 255, prefix="") from None


def mod_limits(store, domain: str | None, ch: LimitChanges) -> None:
    """Set the options given, keep the others; domain None = vlimits.default."""
    if domain is None:
        new = apply_limit_changes(read_default_limits(store), ch)
    else:
        new = apply_limit_changes(domain_limits(store, domain), ch)
        if not hasattr(store, "set_limits"):
            raise UsageError("setting limits works on the local store only (this vpopmaild client reads them)")
    store.set_limits(domain, new)


def del_limits(store, domain: str) -> list[str]:
    store.domain(domain)
    if not hasattr(store, "del_limits"):
        raise UsageError("deleting limits works on the local store only")
    store.del_limits(domain)
    return ["Limits deleted"]




def vmoddomlimits_main(argv: list[str]) -> int:
    from . import usage as U
    from .classic import OPTSTRINGS, Getopt

    opts, pos, _ = Getopt("vmoddomlimits", OPTSTRINGS["vmoddomlimits"], on_unknown="ignore").parse(argv)
    letters = [o for o, _ in opts]
    for o, _ in opts:
        if o == "v":
            print(f"version: {VERSION}")
        if o == "h":
            sys.stdout.write(U.VMODDOMLIMITS)
            return 0
    default = "d" in letters
    if not default and not pos:
        sys.stderr.write(U.VMODDOMLIMITS)
        return 255
    ch = LimitChanges()
    for o, a in opts:
        if o in COUNT_OPTIONS and a:
            ch.counts[COUNT_OPTIONS[o]] = a
        elif o in U64_OPTIONS and a:
            ch.sizes[U64_OPTIONS[o]] = a
        elif o == "q" and a:
            ch.default_quota = a
        elif o == "g":
            ch.gid_flags = a or ""
        elif o in PERM_OPTIONS:
            ch.perms[PERM_OPTIONS[o][0]] = a or ""
    store = open_store()
    if default:
        lim = read_default_limits(store)
        if "D" in letters:
            raise A.ClassicError("Default limits must not be deleted. If you really want to do this, remove "
                                 "the vlimits.default file (vpopmail may stop working without it).", 255, prefix="")
        if "S" in letters:
            print_lines(limits_show_lines(lim, f"Default limits: {store.default_limits_path()}"))
            return 0
        if not ch.empty():
            mod_limits(store, None, ch)
        return 0
    domain = pos[0].lower()
    lim = domain_limits(store, domain)
    if "D" in letters:
        print_lines(del_limits(store, domain))
        return 0
    if "S" in letters:
        print_lines(limits_show_lines(lim, f"Domain: {domain}"))
        return 0
    if not ch.empty():
        mod_limits(store, domain, ch)
    return 0


# --- vdeloldusers -------------------------------------------------------------------

DEFAULT_AGE_DAYS = 180


def catchall_test(store, domain: str):
    """A test `user -> bool` for the mailbox `domain`'s .qmail-default sends unknown users' mail to:
    named as an address, a bare mailbox name, or (vadddomain -e) the mailbox's directory."""
    try:
        target = A.catchall_show(store, domain)
    except (A.ClassicError, UsageError, OSError):
        return lambda u: False
    if len(target) != 1 or target[0] in A.CATCHALL_ACTIONS:
        return lambda u: False
    t = target[0]
    if "/" in t:
        path = os.path.normpath(t)
        return lambda u: path in (os.path.normpath(u.dir), os.path.join(os.path.normpath(u.dir), "Maildir"))
    user, _, dom = t.partition("@")
    if dom and dom.lower() != domain:
        return lambda u: False
    return lambda u: u.name == user.lower()


def load_exclude(path: str | None) -> set[str]:
    """Addresses to leave alone, one a line (as vpopbull's -e file)."""
    if path is None:
        return set()
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return {line.strip().lower() for line in f if line.strip() and not line.startswith("#")}
    except OSError as exc:
        raise A.ClassicError(f"Could not open file {path}: {exc.strerror}", 255, prefix="") from None


@dataclass
class OldUser:
    user: str
    domain: str
    lastauth: float

    @property
    def address(self) -> str:
        return f"{self.user}@{self.domain}"


def _domains(store, domain: str | None) -> list[str]:
    if domain is not None:
        store.domain(domain.lower())
        return [domain.lower()]
    return [e.name for e in store.list_domains() if not e.is_alias]


def old_users(store, domain: str | None, age_days: int, exclude: set[str], note, found=None,
              now: float | None = None):
    """Users whose lastauth is older than age_days.  A user without a lastauth file is never old
    (vpopmail reads its mtime as 0 = unknown); vadduser writes one, so an account nobody ever
    logged in to counts from its creation.  postmaster and the catch-all mailbox are kept."""
    _local(store, "vdeloldusers")  # over vpopmaild: a get_lastauth round trip per user; not done
    cutoff = (time.time() if now is None else now) - 86400 * age_days
    out = []
    for dom in _domains(store, domain):
        is_catchall = catchall_test(store, dom)
        for u in list(store.list_users(dom)):
            address = f"{u.name}@{dom}"
            if u.name == "postmaster":
                note(f"skipping postmaster@{dom}")
                continue
            if address in exclude:
                note(f"skipping {address} (excluded)")
                continue
            la = store.lastauth(u, dom)
            if la is None or la[0] == 0 or la[0] >= cutoff:
                continue
            if is_catchall(u):
                note(f"skipping {address} (catch-all)")
                continue
            out.append(OldUser(u.name, dom, la[0]))
            if found:
                found(address)
    return out


def delete_old(store, users: list[OldUser]) -> None:
    """One bulk delete per domain (one vpasswd and cdb rewrite, not one per user)."""
    by_domain: dict[str, list[str]] = {}
    for u in users:
        by_domain.setdefault(u.domain, []).append(u.user)
    for domain, names in by_domain.items():
        store.del_users(domain, names)


def _age(text: str) -> int:
    if not text.strip().isdigit():
        raise UsageError(f"bad age: {text!r} (want a whole number of days)")
    return int(text)


def vdeloldusers_main(argv: list[str]) -> int:
    from . import usage as U
    from .classic import OPTSTRINGS, Getopt

    opts, pos, _ = Getopt("vdeloldusers", OPTSTRINGS["vdeloldusers"]).parse(argv)
    if not argv:
        sys.stderr.write(U.VDELOLDUSERS)
        return 255
    age, domain, every, delete, verbose = DEFAULT_AGE_DAYS, None, False, False, False
    for o, a in opts:
        if o == "v":
            print(f"version: {VERSION}")
            return 255
        if o == "V":
            verbose = True
        elif o == "D":
            delete = True
        elif o == "e":
            every, domain = True, None
        elif o == "d":
            every, domain = False, a
        elif o == "a":
            age = _age(a or "")
    if not every and not domain:
        raise A.ClassicError("you must supply either the -e or -d [domain] options", 255, prefix="error: ")
    store = open_store()
    say = print_lines if verbose else (lambda m: None)
    found = old_users(store, domain, age, set(), lambda m: say([m]), lambda a: say([a]))
    if delete:
        delete_old(store, found)
    if not found:
        print("no old users found")
    elif not delete:
        print(" ** no users were deleted  **")
        print(" ** use -D to delete users **")
    return 0


# --- vpopbull ------------------------------------------------------------------------



@dataclass
class Bulletin:
    path: str
    method: str = "copy"  # copy / hard / symbolic
    data: bytes = b""
    insert_date: bool = True


def load_bulletin(path: str, method: str) -> Bulletin:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        raise A.ClassicError(f"Could not open file {path}", 255, prefix="") from None
    if not data:
        raise A.ClassicError(f"{path} is empty", 255)
    insert = True
    for line in data.split(b"\n"):
        if line in (b"", b"\r"):
            break
        if line[:6].lower() == b"date: ":
            insert = False
            break
    return Bulletin(os.path.abspath(path), method, data, insert)


def date_header(now: float) -> bytes:
    return time.strftime("Date: %a, %d %b %Y %H:%M:%S +0000\n", time.gmtime(now)).encode()


class Deliverer:
    """Maildir deliveries of one bulletin: a unique name in tmp/, fsync, link into new/.
    Hard and symbolic links go straight into new/ (link() is atomic, nothing partial is seen)."""

    def __init__(self, bull: Bulletin):
        self.bull = bull
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self.pid = os.getpid()
        self.seq = 0
        self.now = time.time()
        self.date = date_header(self.now)
        self.owned: set[tuple[int, int]] = set()

    def content(self, address: str) -> bytes:
        head = f"To: {address}\n".encode() + (self.date if self.bull.insert_date else b"")
        return head + self.bull.data

    def size_for(self, address: str) -> int:
        return len(self.content(address)) if self.bull.method == "copy" else len(self.bull.data)

    def unique(self, size: int) -> str:
        self.seq += 1
        t = time.time()
        return f"{int(t)}.M{int(t * 1e6) % 1000000}P{self.pid}Q{self.seq}.{self.host},S={size}"

    def deliver(self, maildir: str, address: str, owner: Owner) -> int:
        """Deliver one copy; returns its size (what maildirsize is charged)."""
        size = self.size_for(address)
        name = self.unique(size)
        new = os.path.join(maildir, "new", name)
        if self.bull.method == "copy":
            tmp = os.path.join(maildir, "tmp", name)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, self.content(address))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                owner.apply(tmp)
                os.link(tmp, new)
            finally:
                os.unlink(tmp)
        elif self.bull.method == "hard":
            os.link(self.bull.path, new)
            self._own_source(owner)
        else:
            os.symlink(self.bull.path, new)
            self._own_source(owner)
        return size

    def _own_source(self, owner: Owner) -> None:
        """As vpopbull: the linked file is made 0600 and owned by the mail owner, so the POP
        server (running as that owner) can read it."""
        key = (owner.uid, owner.gid)
        if key not in self.owned:
            os.chmod(self.bull.path, 0o600)
            owner.apply(self.bull.path)
            self.owned.add(key)


def _maildirsize_totals(path: str) -> tuple[str, int, int] | None:
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("latin-1").split("\n")
    except OSError:
        return None
    total_b = total_c = 0
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 2:
            try:
                total_b += int(parts[0])
                total_c += int(parts[1])
            except ValueError:
                pass
    return lines[0], total_b, total_c


def over_quota(user, maildir: str, size: int) -> bool:
    """Would this delivery take the user over the quota of his record (as vdelivermail refuses)?
    Usage from maildirsize when there is one, else counted from the Maildir."""
    qsize, qcount = Q.limits_of(user.quota)
    if not qsize and not qcount:
        return False
    totals = _maildirsize_totals(os.path.join(maildir, "maildirsize"))
    used_b, used_c = (totals[1], totals[2]) if totals else Q.usage(maildir)
    return bool((qsize and used_b + size > qsize) or (qcount and used_c + 1 > qcount))


def charge_maildirsize(maildir: str, size: int) -> None:
    """Add the delivery to maildirsize as a Maildir++ delivery does: append `<bytes> 1`."""
    path = os.path.join(maildir, "maildirsize")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return
    try:
        os.write(fd, f"{size} 1\n".encode())
    finally:
        os.close(fd)


def ensure_maildir(home: str, owner: Owner) -> str:
    """The user's Maildir, created (cur, new, tmp; 0700) when missing, as vpopbull does."""
    maildir = os.path.join(home, "Maildir")
    for path in (home, maildir, *(os.path.join(maildir, s) for s in ("cur", "new", "tmp"))):
        if not os.path.isdir(path):
            make_dir(path, 0o700, owner)
    return maildir


@dataclass
class BullResult:
    delivered: list[str] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)
    over_quota: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def bull_domains(store, names: list[str], note) -> list:
    """The domain entries to deliver to: the ones named (all checked first), else every real domain."""
    _local(store, "vpopbull")  # it writes the Maildirs itself
    if names:
        entries = []
        for n in names:
            entry = store.find_domain(n.lower())
            if entry is None:
                raise DomainNotFound(f"domain {n} does not exist")
            entries.append((n.lower(), store.real_entry(n.lower())))
        return entries
    out = []
    for e in store.list_domains():
        if e.is_alias:
            note(f"skipping {e.name} (alias of {e.real})")
        else:
            out.append((e.name, e))
    return out


def vpopbull(store, bull: Bulletin | None, domains: list[str], exclude: set[str], list_only: bool,
             note=lambda m: None, on_user=None, dry_run: bool = False) -> BullResult:
    """Deliver `bull` to every user of the domains (list_only: just name them; dry_run: sort them
    into delivered / over quota as a real run would, writing nothing)."""
    res = BullResult()
    dl = Deliverer(bull) if bull is not None else None
    for name, entry in bull_domains(store, domains, note):
        owner = Owner(entry.uid, entry.gid)
        for u in list(store.list_users(entry.real)):
            address = f"{u.name}@{name}"
            if address.lower() in exclude:
                continue
            if list_only:
                res.listed.append(address)
                continue
            try:
                maildir = os.path.join(u.dir, "Maildir") if dry_run else ensure_maildir(u.dir, owner)
                size = dl.size_for(address)
                if over_quota(u, maildir, size):
                    res.over_quota.append(address)
                    continue
                if not dry_run:
                    dl.deliver(maildir, address, owner)
                    charge_maildirsize(maildir, size)
            except OSError as exc:
                res.failed.append(f"{address}: ERROR COPYING TO {u.dir} ({exc.strerror or exc})")
                if exc.errno == errno.EXDEV:
                    raise StoreIOError(f"cannot hard-link {bull.path} into {u.dir}: on another file system "
                                       f"(use -c to copy)") from None
                continue
            res.delivered.append(address)
            if on_user:
                on_user(address)
    return res


def vpopbull_main(argv: list[str]) -> int:
    from . import usage as U
    from .classic import OPTSTRINGS, Getopt

    if not argv:
        sys.stderr.write(U.VPOPBULL)
        return 255
    opts, pos, bad = Getopt("vpopbull", OPTSTRINGS["vpopbull"], on_unknown="usage").parse(argv)
    if bad:
        sys.stderr.write(U.VPOPBULL)
        return 255
    verbose = list_only = False
    method, email_file, exclude_file = "copy", None, None
    for o, a in opts:
        if o == "v":
            print(f"version: {VERSION}")
        elif o == "V":
            verbose = True
        elif o in "chs":
            method = {"c": "copy", "h": "hard", "s": "symbolic"}[o]
        elif o == "f":
            email_file = a
        elif o == "e":
            exclude_file = a
        elif o == "n":
            list_only = True
    bull = None
    if email_file is not None:
        bull = load_bulletin(email_file, method)
    elif not list_only:
        sys.stderr.write("Error: email_file not specified\n" + U.VPOPBULL)
        return 255
    exclude = load_exclude(exclude_file)
    store = open_store()
    notes: list[str] = []
    res = vpopbull(store, bull, pos, exclude, list_only, note=notes.append if verbose else (lambda m: None),
                   on_user=(lambda a: print(a)) if verbose else None)
    for m in notes:
        print(m, file=sys.stderr)
    print_lines(res.listed)
    for a in res.over_quota:
        print(f"{a}: over quota, not delivered", file=sys.stderr)
    for line in res.failed:
        print(line, file=sys.stderr)
    return 74 if res.failed else 0


# --- entry points ----------------------------------------------------------------------

def _entry(fn):
    def main(argv: list[str] | None = None) -> None:
        args = sys.argv[1:] if argv is None else argv
        guard_std_fds()

        def body():
            try:
                return fn(args)
            except UsageError as exc:
                raise A.ClassicError(exc.message, 255) from None

        sys.exit(run(body))

    main.__name__ = fn.__name__.removesuffix("_main")
    return main


vmoddomlimits = _entry(vmoddomlimits_main)
vdeloldusers = _entry(vdeloldusers_main)
vpopbull_cmd = _entry(vpopbull_main)
