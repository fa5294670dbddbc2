"""etc/ip_alias_map of IP_ALIAS_DOMAINS builds: which domain a local IP address stands for.

One `IP DOMAIN` line per mapping, in the order they were added (not sorted); the same IP may map
to several domains (a lookup takes the first line).  Adding a pair first drops the same pair, so
a re-added mapping moves to the end; a rewrite keeps every other line as it was, except lines
without two fields (vpopmail's rewrite drops them too).  Fields are split on spaces and tabs.
vpopmail itself neither locks this file nor renames it into place when it appends; we write it
whole through temp file + rename under our own lock, so readers see the old file or the new one.
"""

from __future__ import annotations

import os

from ..errors import DomainNotFound, IpMapNotFound, UsageError
from .fsutil import atomic_write, locked, read_bytes

FILE = os.path.join("etc", "ip_alias_map")
TOKENS = " \t\n"


def check_ip(ip: str) -> str:
    """An IPv4 or IPv6 address, kept as written (vpopmail compares the text, and the lookup
    text comes from tcpserver's TCPLOCALIP); anything else is refused."""
    import ipaddress  # here: the lookup path imports this module, seldom this check

    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"invalid IP address: {ip!r}") from None
    return ip


def _fields(line: bytes) -> list[str]:
    text = line.decode("utf-8", "surrogateescape")
    for ch in TOKENS[1:]:
        text = text.replace(ch, " ")
    return text.split()


def read_maps(path: str) -> list[tuple[str, str]]:
    """(ip, domain) of every line with two fields, in file order; no file: none."""
    data = read_bytes(path) or b""
    out = []
    for line in data.splitlines():
        f = _fields(line)
        if len(f) >= 2:
            out.append((f[0], f[1]))
    return out


def lookup(path: str, ip: str) -> str | None:
    for mip, domain in read_maps(path):
        if mip == ip:
            return domain
    return None


def _rewrite(path: str, drop: tuple[str, str], add: bool) -> bool:
    """Rewrite without `drop` (and with it appended when `add`); True when a line was dropped."""
    data = read_bytes(path) or b""
    keep: list[bytes] = []
    dropped = False
    for line in data.splitlines():
        f = _fields(line)
        if len(f) < 2:
            continue
        if (f[0], f[1]) == drop:
            dropped = True
            continue
        keep.append(line + b"\n")
    if add:
        keep.append(f"{drop[0]} {drop[1]}\n".encode())
    elif not dropped:
        return False
    mode = 0o644
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        pass
    atomic_write(path, b"".join(keep), mode)
    return dropped


def lock_path(path: str) -> str:
    return os.path.join(os.path.dirname(path), ".ip_alias_map.lock")


def add(store, path: str, ip: str, domain: str, wait: float | None) -> None:
    check_ip(ip)
    domain = domain.lower()
    if store.find_domain(domain) is None:
        raise DomainNotFound(f"domain {domain} does not exist")
    with locked(lock_path(path), wait):
        _rewrite(path, (ip, domain), add=True)


def delete(path: str, ip: str, domain: str, wait: float | None) -> None:
    check_ip(ip)
    domain = domain.lower()
    with locked(lock_path(path), wait):
        if read_bytes(path) is None or not _rewrite(path, (ip, domain), add=False):
            raise IpMapNotFound(f"no ip map {ip} {domain}")
