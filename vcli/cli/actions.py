"""What each command does, once its arguments are parsed.

Both front ends call these: the classic getopt-style entry points (classic.py)
and the Typer app (app.py).  They take a backend and plain values, do the work,
and return the lines the classic tool prints; errors are raised, never printed.
Kept free of typer so the classic entry points start fast.
"""

from __future__ import annotations

import os

from .. import flags as F
from ..errors import (
    DomainExists,
    DomainNotFound,
    IllegalUsername,
    PasswordChangeDenied,
    UsageError,
    UserNotFound,
    VcliError,
    VpopError,
    WeakPassword,
)
from ..record import record
from .output import SEPARATOR, vdominfo_lines, vuserinfo_lines


class ClassicError(VcliError):
    """An error whose text and exit status the classic tool fixes (vadduser's 255 for a missing domain)."""

    def __init__(self, message: str, exit_code: int, prefix: str = "Error: "):
        super().__init__(message)
        self.exit_code = exit_code
        self.prefix = prefix


class Refused(ClassicError):
    """The command did nothing on purpose (vdeldomain without -f); vpopmail exits 0 here."""


def random_length(arg: str | None) -> int:
    if arg is None or arg == "":
        return 12
    try:
        n = int(arg)
    except ValueError:
        raise UsageError(f"bad random password length: {arg}") from None
    if n > 128:
        raise VpopError(code=-27)
    if n < 1:  # an empty random password is no password
        raise UsageError(f"bad random password length: {arg}")
    return n


def random_password(length: int) -> str:
    from ..store.passwords import random_password as rp

    return rp(length)


# what a crypt(3) result looks like: $id$[params$]salt$hash (optionally behind a {SCHEME} prefix,
# which vpopmail skips when verifying), or traditional DES: 13 characters of [./0-9A-Za-z]
_HASH = r"(\{[A-Za-z0-9.+-]+\})?(\$[0-9A-Za-z]+(\$[^$:\s]*)*\$[^$:\s]+|[./0-9A-Za-z]{13})"


def check_hash_text(hashed: str) -> str:
    """-e / --hashed take a crypt(3) hash verbatim: refuse anything that is not one (an empty
    string, a clear-text password given by mistake), which would leave an account no password
    opens, or (empty) one any password may open in some readers."""
    import re  # here, not at the top: the lookup commands start without re (issue 11 item 4)

    from ..store.passwords import check_hash

    check_hash(hashed)  # the characters vpasswd cannot carry, the length (vpopmail's own errors) first
    if not re.fullmatch(_HASH, hashed):
        raise UsageError("not a crypt(3) hash (want $id$salt$hash, or 13 DES characters)")
    return hashed


NO_PASSWORD = "No password entered"


def no_empty(value: str | None) -> str | None:
    """vpopmail treats an empty option value (-e '', -C '', -c '', -D '') as not given."""
    return value or None


def is_address(target: str) -> bool:
    return any(c in target for c in "@%/")


def full_address(store, address: str) -> tuple[str, str]:
    user, domain = store.parse_address(address)
    if not domain:
        raise ClassicError("You did not use a full email address for the user name", 255, prefix="")
    return user, domain


# --- users ---------------------------------------------------------------------


def add_user(store, address: str, password: str | None, *, hashed: str | None = None, gecos: str | None = None,
             quota: str | None = None, random_len: int | None = None, exist_ok: bool = False,
             ask_password=None, show=None) -> list[str]:
    """vadduser.  Returns the output lines ('Random password: …'), or with `show` hands them to
    it before anything is written (a random password that cannot be shown changes nothing)."""
    from ..model import NewUser

    hashed = no_empty(hashed)  # vadduser -e '': as if not given (then the password is asked for)
    if hashed is not None:
        check_hash_text(hashed)
    user, domain = full_address(store, address)
    if store.find_domain(domain) is None:
        raise ClassicError(DomainNotFound().message, 255)
    if store.find_user(user, domain):
        if exist_ok:
            return []
        raise ClassicError("User already exists", 255)
    if random_len is not None:
        password = random_password(random_len)
    elif not password and hashed is None:  # an empty argument is no password, as in vadduser: ask
        password = ask_password(f"{user}@{domain}") if ask_password else None
        if not password:
            raise ClassicError(NO_PASSWORD, 255)
    out = _shown([f"Random password: {password}"] if random_len is not None else [], show)
    store.add_users(domain, [NewUser(user, password=password, hashed=hashed, gecos=gecos, quota=quota)],
                    exist_ok=exist_ok)
    return out


def _shown(lines: list[str], show) -> list[str]:
    """Lines for the caller to print after the change, or (with `show`) shown now, before it."""
    if show is None:
        return lines
    show(lines)
    return []


def del_user(store, address: str, missing_ok: bool = False) -> None:
    user, domain = full_address(store, address)
    store.domain(domain)
    try:
        store.del_user(user, domain)
    except UserNotFound:
        if not missing_ok:
            raise


def mod_user(store, target: str, changes, rebuild_cdb: bool = True) -> None:
    """vmoduser on one address, or on every user of a domain."""
    if is_address(target):
        user, domain = store.parse_address(target)
        try:
            store.mod_user(user, domain, changes, rebuild_cdb=rebuild_cdb)
        except (UserNotFound, DomainNotFound):
            raise ClassicError(f"no such user {user}@{domain}", 255, prefix="") from None
        return
    domain = target.lower()
    store.domain(domain)
    store.mod_users(domain, changes, rebuild_cdb=rebuild_cdb)  # one commit for the whole domain


def lookup_user(store, address: str):
    """(user record, real domain) for vuserinfo; 'no such user' like the C tool."""
    user, domain = store.parse_address(address)
    try:
        u = store.get_user(user, domain)
    except (UserNotFound, DomainNotFound):
        text = f"no such user {user}@{domain}" if domain else f"no such user {user}"
        raise ClassicError(text, 255, prefix="") from None
    return u, store.real_entry(domain).real


def domain_users(store, domain: str):
    """(users, real domain) for vuserinfo -D: the users as the store streams them (an iterator,
    never the whole domain in memory: issue 11 item 2); an unknown domain fails here, before any."""
    domain = domain.lower()
    if store.find_domain(domain) is None:
        raise DomainNotFound()
    real = store.real_entry(domain).real
    return store.list_users(real), real


def with_mask(store, users, real: str):
    """(user, the domain's limit bits) for each user; the bits read once, after the listing has
    started (a remote backend asks list_users first, then the limits, as before streaming)."""
    mask, first = None, True
    for u in users:
        if first:
            mask, first = store.domain_mask(real), False
        yield u, mask


def _has_quota(u) -> bool:
    return u.quota != "NOQUOTA"  # vuserinfo shows "NOQUOTA", no usage, for the others


def user_info_lines(store, address: str | None, domain: str | None, selectors: str):
    """vuserinfo's lines; for a domain a generator, one user's block at a time, with the domain's
    limit bits read once (print_lines writes it as it comes)."""
    if domain is not None:
        users, real = domain_users(store, domain)

        def blocks():
            from .listing import usage_and_lastauth  # both cores for a big cdb domain

            wants = _has_quota if not selectors or "Q" in selectors else None
            auth_shown = not selectors or "l" in selectors
            pairs = with_mask(store, users, real)
            for u, mask, usage, auth in usage_and_lastauth(store, real, pairs, wants, auth_shown):
                yield SEPARATOR
                yield from vuserinfo_lines(store, u, real, selectors, listing=True, mask=mask, usage=usage, auth=auth)

        return blocks()
    u, real = lookup_user(store, address)
    return vuserinfo_lines(store, u, real, selectors)


def set_password(store, address: str, password: str | None, random_len: int | None = None,
                 ask_password=None, show=None) -> list[str]:
    """vpasswd: refuses an unknown user and NO_PASSWD_CHNG with vpopmail's 'Illegal username'."""
    user, domain = store.parse_address(address)
    try:
        u = store.get_user(user, domain)
    except (UserNotFound, DomainNotFound):
        raise IllegalUsername() from None
    if random_len is not None and show is not None and _no_passwd_chng(store, u, domain):
        raise IllegalUsername()  # refused before a random password is shown that would never be set
    if random_len is not None:
        password = random_password(random_len)
    elif not password:  # an empty argument is no password: ask, and refuse an empty answer
        password = ask_password(f"{user}@{domain}") if ask_password else ""
        if not password:
            raise ClassicError(NO_PASSWORD, 255)
    out = _shown([f"Random password: {password}"] if random_len is not None else [], show)
    try:
        store.set_password(user, domain, password)
    except PasswordChangeDenied:
        raise IllegalUsername() from None
    return out


def _no_passwd_chng(store, u, domain: str) -> bool:
    """NO_PASSWD_CHNG in the user's effective flags, when this login may read them (the write
    checks again in any case)."""
    try:
        return bool(store.effective_flags(u, store.real_entry(domain).real) & F.NO_PASSWD_CHNG)
    except VcliError:
        return False


def set_quota(store, target: str, quota: str) -> None:
    """vsetuserquota (the quota is upper-cased first, as the C tool does)."""
    quota = quota.upper()
    if is_address(target):
        user, domain = store.parse_address(target)
        store.domain(domain)
        store.set_quota(user, domain, quota)
        return
    domain = target.lower()
    store.domain(domain)
    from ..model import UserChanges

    store.mod_users(domain, UserChanges(quota=quota))  # one commit for the whole domain


# --- domains -------------------------------------------------------------------


@record
class DomainOptions:
    quota: str | None = None
    catchall: str | None = None
    user: str | None = None
    base_dir: str | None = None
    uid: str | None = None
    gid: str | None = None
    optimize: bool = False


def add_domain(store, domain: str, password: str | None, opts: DomainOptions, random_len: int | None = None,
               ask_password=None, hashed: str | None = None, show=None) -> list[str]:
    domain = domain.lower()
    if hashed is not None:
        check_hash_text(hashed)
    if store.find_domain(domain):
        raise DomainExists()
    uid = gid = None
    base = opts.base_dir
    if opts.user:
        import pwd

        try:
            pw = pwd.getpwnam(opts.user)
        except KeyError:
            raise ClassicError(f"user {opts.user} not found in /etc/passwd", 255) from None
        uid, gid = pw.pw_uid, pw.pw_gid
        base = base or pw.pw_dir
    try:
        if opts.uid is not None:
            uid = int(opts.uid)
        if opts.gid is not None:
            gid = int(opts.gid)
    except ValueError:
        raise UsageError("uid and gid must be numbers") from None
    if random_len is not None:
        password = random_password(random_len)
    elif not password and hashed is None:  # an empty argument is no password: ask, refuse an empty answer
        password = ask_password("postmaster") if ask_password else ""
        if not password:
            raise ClassicError(NO_PASSWORD, 255)
    out = _shown([f"Random password: {password}"] if random_len is not None else [], show)
    try:
        store.add_domain(domain, password, hashed=hashed, quota_text=opts.quota, catchall=opts.catchall, uid=uid,
                         gid=gid, base_dir=base, optimize=opts.optimize)
    except WeakPassword as exc:
        raise ClassicError(f"(vadduser) {exc.message}", exc.exit_code) from None
    return out


def del_domain(store, domain: str, force: bool, missing_ok: bool = False, progress=None,
               dry_run: bool = False) -> list[str]:
    """vdeldomain; a real domain with aliases needs force.  Returns the warning lines."""
    domain = domain.lower()
    try:
        entry = store.domain(domain)
    except DomainNotFound:
        if missing_ok:
            return []
        raise
    lines: list[str] = []
    if not entry.is_alias:
        aliases = store.aliases_of(entry.real)
        if aliases and not force:
            raise Refused(f"Alias domains exist: {' '.join(aliases)}; use -f to force delete of domain and all aliases",
                          1, prefix="Warning: ")
        if aliases:
            head = "Warning: Alias domains that would be deleted:" if dry_run else "Warning: Alias domains deleted:"
            lines = [head] + [f"   {a}" for a in aliases]
    if progress is not None:
        store.del_domain(domain, force=True, progress=progress)
    else:
        store.del_domain(domain, force=True)
    return lines


def domain_infos(store, domain: str | None):
    """DomainInfo list for vdominfo: one (the real domain, with aliases) or every assign entry."""
    from ..model import DomainInfo

    if domain is not None:
        domain = domain.lower()
        if store.find_domain(domain) is None:
            raise ClassicError("Invalid domain name", 245, prefix="")
        info = store.domain_info(domain)
        return [info.replace(entry=store.real_entry(domain))]
    out = []
    counters: dict[str, int] = {}
    entries = store.list_domains()
    for e in entries:
        if e.real not in counters:
            counters[e.real] = store.user_counter(store.find_domain(e.real) or e)
        out.append(DomainInfo(e, counters[e.real], [a.name for a in entries if a.real == e.name and a.is_alias]))
    return out


def dom_info_lines(store, domain: str | None, selectors: str) -> list[str]:
    infos = domain_infos(store, domain)
    if domain is not None:
        return vdominfo_lines(infos[0], selectors, infos[0].entry.dir, aliases_after=True)
    if not infos:
        return ["What now - Success"]
    out: list[str] = []
    for info in infos:
        out.extend(vdominfo_lines(info, selectors, info.entry.dir, aliases_after=False))
        out.append("")
    return out


def add_alias_domain(store, first: str, second: str) -> None:
    """vaddaliasdomain: whichever of the two names exists is the real domain."""
    a, b = first.lower(), second.lower()
    if a == b:
        raise ClassicError("real domain and alias domain are the same!", 255)
    ea, eb = store.find_domain(a), store.find_domain(b)
    if ea and eb:
        raise ClassicError("Both domains already exist, unable to create alias.", 255)
    if not ea and not eb:
        raise ClassicError(f"Neither '{first}' or '{second}'  exist, unable to create alias.", 255)
    real, alias = (a, b) if ea else (b, a)
    store.add_alias_domain(real, alias)


# --- aliases -------------------------------------------------------------------


def split_alias(store, target: str) -> tuple[str, str]:
    """(alias, domain) of 'alias@domain' or ('', domain); the domain must exist."""
    target = target.lower()
    alias, _, domain = target.rpartition("@") if "@" in target else ("", "", target)
    try:
        store.real_entry(domain)
    except (DomainNotFound, VpopError):
        raise ClassicError("invalid domain, not in qmail assign file", 245, prefix="") from None
    if alias:
        from ..model import check_user

        try:
            check_user(alias)
        except VpopError:
            raise IllegalUsername() from None
    return alias, domain


def alias_listing(store, target: str) -> list[tuple[str, str, str]]:
    """(alias, domain, line) rows for valias -s."""
    alias, domain = split_alias(store, target)
    if alias:
        lines = store.alias_lines(domain, alias)
        if not lines:
            raise ClassicError(f"No aliases {alias}@{domain} found", 255, prefix="")
        return [(alias, domain, x) for x in lines]
    rows = [(a, domain, x) for a, lines in store.list_aliases(domain) for x in lines]
    if not rows:
        raise ClassicError(f"No aliases found for domain {domain}", 255, prefix="")
    return rows


def alias_names(store, target: str) -> list[str]:
    alias, domain = split_alias(store, target)
    if alias:
        raise ClassicError("Please enter domain name only.", 255, prefix="")
    names = store.alias_names(domain)
    if not names:
        raise ClassicError(f"No aliases found for domain {domain}", 255, prefix="")
    return names


def alias_insert(store, target: str, line: str) -> None:
    alias, domain = split_alias(store, target)
    if not alias:
        raise IllegalUsername()
    store.add_alias_line(domain, alias, line)


def alias_delete(store, target: str) -> None:
    alias, domain = split_alias(store, target)
    if not alias:
        raise IllegalUsername()
    store.delete_alias(domain, alias)


def flag_changes(letters: list[str], warn) -> int:
    """OR of the vmoduser letters given; -S/-E need root, as in vmoduser."""
    bits = 0
    for letter in letters:
        f = F.BY_LETTER.get(letter)
        if f is None:
            continue
        if f.root_only and os.getuid() != 0:
            warn(f"Warning: -{letter} ({f.field}) needs root; ignored")
            continue
        bits |= f.bit
    return bits


# --- catch-all -------------------------------------------------------------------

CATCHALL_ACTIONS = ("delete", "bounce-no-mailbox")


def _local_store(store, what: str):
    if not hasattr(store, "set_catchall"):
        raise UsageError(f"{what} works on the local store only")
    return store


def catchall_show(store, domain: str) -> list[str]:
    """Where mail to unknown users of a domain goes: the target of its .qmail-default's vdelivermail
    line (an address, a mailbox path, delete or bounce-no-mailbox), else the file's lines."""
    import re

    from ..store.fsutil import read_bytes

    entry = _local_store(store, "catchall").real_entry(domain.lower())
    data = read_bytes(os.path.join(entry.dir, ".qmail-default"))
    if data is None:
        raise ClassicError(f"{entry.real} has no .qmail-default (mail to unknown users bounces)", 1)
    lines = data.decode("utf-8", "replace").splitlines()
    m = re.match(r"\|\s*\S*vdelivermail\s+''\s+(\S+)\s*$", lines[0]) if lines else None
    return [m.group(1)] if m else lines


def catchall_set(store, domain: str, address: str | None = None, action: str | None = None) -> None:
    """Send mail to unknown users to `address` (a mailbox of the domain without '@', as vadddomain -e),
    or `action` it (delete / bounce-no-mailbox)."""
    store = _local_store(store, "catchall")
    real = store.real_entry(domain.lower()).real
    if address is not None:
        address = address.strip()
        if not address:
            raise UsageError("--set needs an address or a mailbox name")
        if "@" not in address:
            from ..errors import UserNotFound

            check = address.lower()
            if store.find_user(check, real) is None:
                raise UserNotFound(f"User does not exist: {check}@{real}")
            address = check
    store.set_catchall(real, address, action)
