"""Quota strings and Maildir++ `maildirsize` (spec/store.md §9)."""

from __future__ import annotations

import os
import stat

from ..errors import TooLong
from ..model import _atoi as _strtoll  # C strtoll's prefix rule, without re

MAX_QUOTA = 20


def normalize(quota: str) -> str:
    """vpopmail's format_maildirquota: '50M' -> '52428800S', 'abc' -> '', 'NOQUOTA' kept."""
    if quota == "NOQUOTA":
        return quota
    size = count = 0
    for part in quota.split(","):
        if part.endswith("C"):
            count = _strtoll(part[:-1])
            continue
        if part[-1:] in ("S", "s"):
            part = part[:-1]
        if part[-1:] in ("B", "b"):
            part = part[:-1]
        value = _strtoll(part)
        if part[-1:] in ("M", "m"):
            value *= 1048576
        elif part[-1:] in ("K", "k"):
            value *= 1024
        size = value
    if size and count:
        out = f"{size}S,{count}C"
    elif size:
        out = f"{size}S"
    elif count:
        out = f"{count}C"
    else:
        out = ""
    if len(out) > MAX_QUOTA:
        raise TooLong(f"quota too long (max={MAX_QUOTA})", -29)
    return out


def limits_of(quota: str) -> tuple[int, int]:
    """(bytes, messages) of a stored quota string; 0 means no limit of that kind."""
    size = count = 0
    if quota and quota != "NOQUOTA":
        for part in quota.split(","):
            if part.endswith("C"):
                count = _strtoll(part[:-1])
            elif part.endswith("S"):
                size = _strtoll(part[:-1])
            else:
                size = _strtoll(part)
    return size, count


def _message_size(folder: str, name: str) -> int:
    at = name.find(",S=")
    while at >= 0:  # the first ",S=<digits>" (str methods: re costs start-up time)
        end = at + 3
        while end < len(name) and name[end].isdecimal():
            end += 1
        if end > at + 3:
            return int(name[at + 3:end])
        at = name.find(",S=", at + 1)
    try:
        return os.lstat(os.path.join(folder, name)).st_size
    except OSError:
        return 0


def _plain(maildir: str) -> bool:
    """True when new, cur and tmp are the Maildir's only subdirectories: a link count of 5 (ext4,
    xfs; a file system that keeps no count says 1 or 2) made of those three, real directories
    (a symlink is not counted in the parent's links).  Two stats instead of reading the
    directory, for each of a listing's 100,000 users; written out (no helper calls, no
    os.path.join) because this is a listing's innermost loop."""
    try:
        if os.stat(maildir).st_nlink != 5:
            return False
        lstat, isdir = os.lstat, stat.S_ISDIR
        return (isdir(lstat(maildir + "/tmp").st_mode) and isdir(lstat(maildir + "/new").st_mode)
                and isdir(lstat(maildir + "/cur").st_mode))
    except OSError:
        return False


def usage(maildir: str) -> tuple[int, int]:
    """(bytes, messages) in a Maildir: new/ and cur/ of it and its folders, .Trash and T-flagged excluded."""
    folders = [maildir]
    if not _plain(maildir):
        try:
            with os.scandir(maildir) as it:
                for entry in it:
                    if entry.name.startswith(".") and entry.name not in (".", "..", ".Trash"):
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(entry.path)
        except OSError:
            return 0, 0
    size = count = 0
    for folder in folders:
        for sub in ("new", "cur"):
            path = folder + "/" + sub
            try:
                names = os.listdir(path)
            except OSError:
                continue
            for name in names:
                if name.startswith("."):
                    continue
                info = name.partition(":2,")[2]
                if "T" in info:
                    continue
                size += _message_size(path, name)
                count += 1
    return size, count


def percent(quota: str, used_bytes: int, used_count: int) -> int:
    """Usage percentage as vuserinfo prints it (integer, capped at 100)."""
    qsize, qcount = limits_of(quota)
    pct = 0
    if qsize:
        pct = max(pct, used_bytes * 100 // qsize)
    if qcount:
        pct = max(pct, used_count * 100 // qcount)
    return min(pct, 100)


def maildirsize_bytes(quota: str, used_bytes: int, used_count: int) -> bytes:
    return f"{quota}\n{used_bytes} {used_count}\n".encode()


def read_maildirsize(maildir: str) -> tuple[int, int] | None:
    """(bytes, messages) summed from Maildir++ `maildirsize` (quota line, then `<bytes> <count>`
    lines, deltas included); None when the file is missing or does not parse."""
    try:
        with open(os.path.join(maildir, "maildirsize"), "rb") as f:
            lines = f.read(1 << 20).decode("latin-1").split("\n")[1:]
    except OSError:
        return None
    size = count = 0
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
            return None
        size, count = size + int(parts[0]), count + int(parts[1])
    return max(size, 0), max(count, 0)
