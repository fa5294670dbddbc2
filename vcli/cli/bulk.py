"""Bulk import: many users with one lock, one vpasswd rewrite and one cdb rebuild per domain.

Input is `address,password[,quota[,comment]]` per line, or CSV with a header
naming those columns (`hash` instead of `password` for crypt(3) hashes, as
migrations carry them).  Hashing clear-text passwords is the expensive part,
so it runs on every core before the store lock is taken.
"""

from __future__ import annotations

import csv
import io
import sys
from concurrent.futures import ProcessPoolExecutor

from ..errors import UsageError, UserExists, VcliError

COLUMNS = ("address", "password", "quota", "comment")


def read_rows(path: str) -> list[dict]:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    first = [c.strip().lower() for c in next(csv.reader([lines[0]]))]
    rows = []
    if "address" in first:
        reader = csv.DictReader(io.StringIO("\n".join(lines)))
        reader.fieldnames = [c.strip().lower() for c in reader.fieldnames or []]
        for n, r in enumerate(reader, 2):
            r["_line"] = n
            rows.append(r)
        return rows
    for n, rec in enumerate(csv.reader(lines), 1):
        r = dict(zip(COLUMNS, (c for c in rec), strict=False))
        r["_line"] = n
        rows.append(r)
    return rows


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


def bulk_add(store, path: str, hashed: bool = False, exist_ok: bool = False, jobs: int = 1,
             progress: bool = False) -> int:
    """Add every row; all rows are validated before anything is written."""
    from ..store import passwords as pw
    from ..store.store import NewUser

    rows = read_rows(path)
    by_domain: dict[str, list[tuple[int, NewUser]]] = {}
    clear: list[tuple[NewUser, str]] = []
    policy = pw.Policy.load(store.root)
    seen: dict[tuple[str, str], int] = {}
    for r in rows:
        line = r["_line"]
        address = (r.get("address") or "").strip()
        secret = r.get("hash") if r.get("hash") not in (None, "") else r.get("password")
        is_hash = hashed or r.get("hash") not in (None, "")
        if not address or secret is None:
            raise UsageError(f"{path}:{line}: need address and password")
        try:
            user, domain = store.parse_address(address)
            if not domain:
                raise UsageError("not a full address")
            real = store.real_entry(domain).real
            if (real, user) in seen:
                raise UserExists(f"User already exists (line {seen[(real, user)]})")
            seen[(real, user)] = line
            if not exist_ok and store.find_user(user, real) is not None:
                raise UserExists("User already exists")
            if not is_hash:
                pw.check_clear(secret)
                policy.check(secret)
            # validated with a stand-in hash; the real ones are computed below, on all cores
            new = store.prepare_user(domain, NewUser(user, None, secret if is_hash else "x",
                                                     r.get("comment") or None, r.get("quota") or None))
            new.hashed = secret if is_hash else None
        except VcliError as exc:  # the same error (status, policy), its text naming the row
            exc.args = (f"{path}:{line}: {address}: {exc.message}",)
            raise exc from None
        if not is_hash:
            clear.append((new, secret))
            if store.s.clear_passwords:
                new.password = secret
        by_domain.setdefault(store.real_entry(domain).real, []).append((line, new))
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
