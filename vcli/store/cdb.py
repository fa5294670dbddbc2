"""D. J. Bernstein's constant database, byte-identical to vpopmail's and qmail's writers.

vpasswd.cdb and users/cdb are rebuilt from scratch after every change; records go
in the order given and each hash table is filled in insertion order, so two
writers that agree on the record order produce the same bytes (spec/store.md §4).
"""

from __future__ import annotations

import os
import struct

_HEADER = 2048


def cdb_hash(key: bytes) -> int:
    h = 5381
    for c in key:
        h = ((h << 5) + h) & 0xFFFFFFFF ^ c
    return h


def build(records) -> bytes:
    """The complete cdb file for an iterable of (key, value) byte pairs."""
    body = bytearray()
    entries: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    pos = _HEADER
    pack = struct.pack
    for key, value in records:
        h = cdb_hash(key)
        entries[h & 0xFF].append((h, pos))
        body += pack("<II", len(key), len(value))
        body += key
        body += value
        pos += 8 + len(key) + len(value)
    header = bytearray()
    tables = bytearray()
    for bucket in entries:
        n = 2 * len(bucket)
        header += pack("<II", pos + len(tables), n)
        if not n:
            continue
        slots = [(0, 0)] * n
        for h, rpos in bucket:
            i = (h >> 8) % n
            while slots[i][1]:
                i = (i + 1) % n
            slots[i] = (h, rpos)
        for h, rpos in slots:
            tables += pack("<II", h, rpos)
    if pos + len(tables) > 0xFFFFFFFF:
        raise OverflowError("cdb larger than 4 GiB")
    return bytes(header) + bytes(body) + bytes(tables)


class CdbReader:
    """Look up keys in a cdb file without reading it whole (one pread per probe)."""

    def __init__(self, path: str | os.PathLike, data: bytes | None = None):
        self.data = data
        if data is not None:  # an in-memory image (dry runs)
            self.fd, self.size = -1, len(data)
        else:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self.size = os.fstat(self.fd).st_size
        if self.size < _HEADER:
            self.close()
            raise ValueError(f"{path}: truncated cdb ({self.size} bytes)")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self, pos: int, n: int) -> bytes:
        data = self.data[pos : pos + n] if self.data is not None else os.pread(self.fd, n, pos)
        if len(data) != n:
            raise ValueError("truncated cdb")
        return data

    def get(self, key: bytes) -> bytes | None:
        """The first value stored under `key`, as vpopmail's reader finds it."""
        h = cdb_hash(key)
        tpos, nslots = struct.unpack("<II", self._read((h & 0xFF) * 8, 8))
        if not nslots:
            return None
        if tpos + nslots * 8 > self.size:
            raise ValueError("corrupt cdb: hash table past end of file")
        slot = (h >> 8) % nslots
        for _ in range(nslots):
            sh, rpos = struct.unpack("<II", self._read(tpos + slot * 8, 8))
            if rpos == 0:
                return None
            if sh == h:
                klen, dlen = struct.unpack("<II", self._read(rpos, 8))
                if rpos + 8 + klen + dlen > self.size:
                    raise ValueError("corrupt cdb: record past end of file")
                if klen == len(key) and self._read(rpos + 8, klen) == key:
                    return self._read(rpos + 8 + klen, dlen)
            slot = (slot + 1) % nslots
        return None


def records(data: bytes):
    """Every (key, value) record of a cdb image, in file order (for checks and tests)."""
    if len(data) < _HEADER:
        raise ValueError("truncated cdb")
    end = min(struct.unpack_from("<I", data, i * 8)[0] for i in range(256))
    pos = _HEADER
    while pos < end:
        if pos + 8 > end:
            raise ValueError("corrupt cdb: record header past end")
        klen, dlen = struct.unpack_from("<II", data, pos)
        if pos + 8 + klen + dlen > end:
            raise ValueError("corrupt cdb: record past end")
        yield data[pos + 8 : pos + 8 + klen], data[pos + 8 + klen : pos + 8 + klen + dlen]
        pos += 8 + klen + dlen
