"""The vpasswd line format and its cdb index (spec/store.md §3, §4).

Lines are kept as the bytes read, so a rewrite copies every line it does not
change byte for byte, as vpopmail does.
"""

from __future__ import annotations

from ..model import MAX_DIR, MAX_GECOS, VUser  # noqa: F401 - re-exported: the vpasswd codec's record type
from . import cdb


def _atoi(text: str) -> int:
    text = text.strip()
    n = len(text) - len(text.lstrip("+-"))
    digits = ""
    for ch in text[n:]:
        if not ch.isdigit():
            break
        digits += ch
    value = int(digits) if digits else 0
    return -value if text[:1] == "-" else value


def parse_value(name: str, value: bytes) -> VUser:
    """A user from its cdb record (the line after the name)."""
    parts = value.decode("utf-8", "surrogateescape").split(":")
    if len(parts) < 6:
        raise ValueError(f"vpasswd record for {name!r} has fewer than 7 fields")
    clear = ":".join(parts[6:]) if len(parts) > 6 else None
    return VUser(name, parts[0], parts[1], _atoi(parts[2]), parts[3], parts[4], parts[5], clear)


def parse_line(line: bytes) -> VUser:
    body = line.rstrip(b"\n")
    name, sep, value = body.partition(b":")
    if not sep or body.count(b":") < 6:
        raise ValueError("fewer than 6 colons")
    return parse_value(name.decode("utf-8", "surrogateescape"), value)


def line_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].rstrip(b"\n")


def split_lines(data: bytes) -> list[bytes]:
    """The file's lines, each with its '\\n' (a last line without one keeps none)."""
    return data.splitlines(keepends=True) if data else []


def build_cdb(lines: list[bytes]) -> bytes:
    """vpasswd.cdb for these lines, as vpopmail's builder makes it.

    A last line without '\\n' is not indexed, as in vpopmail.
    """

    def records():
        for line in lines:
            if not line.endswith(b"\n"):
                break
            key, _, value = line[:-1].partition(b":")
            yield key, value

    return cdb.build(records())
