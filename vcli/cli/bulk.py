"""Bulk import: many users with one lock, one vpasswd rewrite and one cdb rebuild per domain.

Input is `address,password[,quota[,comment]]` per line, or CSV with a header
naming those columns (`hash` instead of `password` for crypt(3) hashes, as
migrations carry them).  Every field is trimmed of surrounding white space, the password
too (so a password with leading or trailing spaces cannot come from a file: set it with
`vpasswd --password-file`); a UTF-8 byte-order mark is skipped.  Hashing clear-text passwords is the expensive part,
so it runs on every core before the store lock is taken.
"""

from __future__ import annotations

import codecs
import csv
import sys
from concurrent.futures import ProcessPoolExecutor

from ..errors import EXIT_DATAERR, UsageError, UserExists, VcliError

COLUMNS = ("address", "password", "quota", "comment")
MAX_REPORTED = 20  # bad lines listed before "... and N more"


class BadInput(VcliError):
    """A --from-file line that is not text (not UTF-8): a data error."""

    exit_code = EXIT_DATAERR


def read_rows(path: str) -> list[dict]:
    """The rows of the file, each with its line number (`_line`); a line that is not UTF-8 comes
    back as a row holding only `_error`.  Fields are trimmed; a UTF-8 byte-order mark is skipped."""
    if path == "-":
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    else:
        with open(path, "rb") as f:
            raw = f.read()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    rows: list[dict] = []
    header: list[str] | None = None
    for n, data in enumerate(raw.splitlines(), 1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            rows.append({"_line": n, "_error": BadInput(f"{path}:{n}: not UTF-8 text (byte {exc.start + 1})")})
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [c.strip() for c in next(csv.reader([line]), [])]
        if header is None and not rows and "address" in (c.lower() for c in fields):
            header = [c.lower() for c in fields]
            continue
        r = dict(zip(header or COLUMNS, fields, strict=False))
        r["_line"] = n
        rows.append(r)
    return rows


def _report(errors: list[VcliError]) -> VcliError:
    """One error for every bad line: the first's status (and policy text), a line for each."""
    texts = [e.message for e in errors[:MAX_REPORTED]]
    if len(errors) > MAX_REPORTED:
        texts.append(f"... and {len(errors) - MAX_REPORTED} more bad lines")
    first = errors[0]
    first.args = ("\nError: ".join(texts),)
    return first


def _hash_chunk(args: tuple[list[str], str]) -> list[str]:
    from ..store.passwords import hash_password

    passwords, scheme = args
    return [hash_password(p, scheme) for p in passwords]


def hash_all(passwords: list[str], scheme: str, jobs: int) -> list[str]:
    """crypt(3) every password, spread over `jobs` processes."""
    if jobs <= 1 or len(passwords) < 64:
        return _hash_chunk((passwords, scheme))
    size = max(256, len(passwords) // (jobs * 8))
    chunks = [(passwords[i : i + size], scheme) for i in range(0, len(passwords), size)]
    out: list[str] = []
    import os

    from ..store.store import _die_with_parent

    # the workers die with the command (SIGKILL included), as the tree builders do
    with ProcessPoolExecutor(jobs, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        for part in pool.map(_hash_chunk, chunks):
            out.extend(part)
    return out


BIG_IMPORT = 1000  # names from which a remote import reads one listing per domain, not a lookup each

def _existing(store, domain: str, users: list[str]) -> set[str]:
    """The users the domain has already: in one pass of the local store's auth module (an SQL
    site: batched queries), else (the remote backend) one lookup each."""
    lookup = getattr(store, "existing_users", None)
    if lookup is not None:
        return lookup(domain, users)
    if len(users) >= BIG_IMPORT:  # over the protocol one listing beats a round trip a name
        wanted = set(users)
        return {u.name for u in store.list_users(domain) if u.name in wanted}
    return {u for u in users if store.find_user(u, domain) is not None}


def bulk_add(store, path: str, hashed: bool = False, exist_ok: bool = False, jobs: int = 1,
             progress: bool = False) -> int:
    """Add every row; all rows are validated before anything is written, and every bad line is
    reported (the first MAX_REPORTED of them); the exit status is the first bad line's."""
    from ..model import NewUser, parse_address
    from ..store import passwords as pw

    rows = read_rows(path)
    from .actions import check_hash_text

    by_domain: dict[str, list[tuple[int, NewUser]]] = {}
    clear: list[tuple[NewUser, str]] = []
    policy = pw.Policy.load(store.root)
    seen: dict[tuple[str, str], int] = {}
    errors: list[tuple[int, VcliError]] = []
    to_look_up: dict[str, list[tuple[str, int, str]]] = {}  # real domain -> (user, line, address)
    # what every row asks the same: the default domain, each domain's real name (a million rows
    # asked users/cdb a million times, ~40 us each)
    default, max_user = store.default_domain(), store.s.max_user
    real_of: dict[str, str] = {}
    remote = bool(getattr(store, "is_remote", False))
    for r in rows:
        line = r["_line"]
        if "_error" in r:
            errors.append((line, r["_error"]))
            continue
        address = r.get("address") or ""
        secret = r.get("hash") if r.get("hash") else r.get("password")
        is_hash = hashed or bool(r.get("hash"))
        if not address or not secret:  # an empty password is no password
            errors.append((line, UsageError(f"{path}:{line}: need address and password")))
            continue
        try:
            user, domain = parse_address(address, default, max_user)
            if not domain:
                raise UsageError("not a full address")
            real = real_of.get(domain)
            if real is None:
                real = real_of[domain] = store.real_entry(domain).real
            if (real, user) in seen:
                raise UserExists(f"User already exists (line {seen[(real, user)]})")
            seen[(real, user)] = line
            if is_hash:
                check_hash_text(secret)
            else:
                pw.check_clear(secret)
                policy.check(secret)
            # validated with a stand-in hash; the real ones are computed below, on all cores
            new = store.prepare_user(domain, NewUser(user, None, secret if is_hash else "x",
                                                     r.get("comment") or None, r.get("quota") or None))
            new.hashed = secret if is_hash else None
        except VcliError as exc:  # the same error (status, policy), its text naming the row
            exc.args = (f"{path}:{line}: {address}: {exc.message}",)
            errors.append((line, exc))
            continue
        if not exist_ok:
            to_look_up.setdefault(real, []).append((user, line, address))
        if not is_hash:
            if remote:  # sent as the add_user's password: the daemon hashes it, no mod_user after
                new.password = secret
            else:
                clear.append((new, secret))
                if store.s.clear_passwords:
                    new.password = secret
        by_domain.setdefault(real, []).append((line, new))
    for real, wanted in to_look_up.items():  # one pass per domain, not a lookup per line
        have = _existing(store, real, [u for u, _, _ in wanted])
        errors += [(line, UserExists(f"{path}:{line}: {address}: User already exists"))
                   for user, line, address in wanted if user in have]
    if errors:  # all or nothing: every bad line reported, none imported
        raise _report([e for _, e in sorted(errors, key=lambda x: x[0])])
    if clear:
        for (new, _), h in zip(clear, hash_all([s for _, s in clear], store.s.hash, jobs), strict=True):
            new.hashed = h
    total = 0
    from .progress import Progress

    for domain, items in by_domain.items():
        bar = Progress(f"adding to {domain}", len(items), enabled=progress)
        created = store.add_users(domain, [n for _, n in items], prepared=True, exist_ok=exist_ok, progress=bar)
        bar.done()
        total += len(created)
    return total
