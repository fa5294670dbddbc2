#!/usr/bin/env python3
"""Replay the transcripts against a vpopmaild at HOST:PORT and compare every byte.

    run.py HOST:PORT [FILE ...]   -> prints one line per transcript, exit 1 on any mismatch

Commands are sent one at a time, each after the previous reply is complete (the real daemon
cannot take pipelined commands).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PLACEHOLDERS = {
    "{HASH}": r"\$[0-9a-z]+\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+",
    "{ANY}": r"\S+",
    "{TIME}": r"\d+",
    "{UID}": r"\d+",
    "{GID}": r"\d+",
    "{VPOPMAIL_DIR}": r"/\S+",
}


def parse(path: str) -> list[tuple[str, str]]:
    steps = []
    with open(path, encoding="utf-8") as f:
        for raw in f.read().split("\n"):
            if not raw or raw.startswith("#"):
                continue
            kind, text = raw[:3], raw[3:]
            if kind not in ("C: ", "C~ ", "S: ", "S~ "):
                raise ValueError(f"{path}: bad line {raw!r}")
            steps.append((kind, text))
    return steps


def pattern(text: str, ending: bytes) -> re.Pattern:
    out = ""
    i = 0
    while i < len(text):
        for ph, rx in PLACEHOLDERS.items():
            if text.startswith(ph, i):
                out += rx
                i += len(ph)
                break
        else:
            out += re.escape(text[i])
            i += 1
    return re.compile(out.encode("utf-8") + re.escape(ending))


def read_line(sock: socket.socket, buf: bytearray, deadline: float) -> bytes:
    while b"\n" not in buf:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError("timed out waiting for the server") from None
        if not chunk:
            raise AssertionError("server closed the connection")
        buf += chunk
    i = buf.index(b"\n") + 1
    line = bytes(buf[:i])
    del buf[:i]
    return line


def replay(host: str, port: int, path: str, timeout: float = 10.0) -> list[str]:
    """Differences between the transcript and the server (empty list = identical)."""
    steps = parse(path)
    problems = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        buf = bytearray()
        for n, (kind, text) in enumerate(steps, 1):
            if kind in ("C: ", "C~ "):
                sock.sendall(text.encode("utf-8") + (b"\r\n" if kind == "C: " else b"\n"))
                continue
            try:
                got = read_line(sock, buf, time.monotonic() + timeout)
            except AssertionError as exc:
                problems.append(f"step {n}: expected {text!r}: {exc}")
                break
            want = pattern(text, b"\r\n" if kind == "S: " else b"\n")
            if not want.fullmatch(got):
                problems.append(f"step {n}: expected {text!r} + {'CRLF' if kind == 'S: ' else 'LF'}, got {got!r}")
                break
        if not problems:
            sock.settimeout(0.2)
            try:
                extra = bytes(buf) + sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                extra = bytes(buf)
            if extra:
                problems.append(f"unexpected extra bytes {extra[:80]!r}")
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 64
    host, _, port = argv[0].rpartition(":")
    files = argv[1:] or sorted(f for f in os.listdir(HERE) if f.endswith(".txt"))
    bad = 0
    for name in files:
        path = name if os.path.exists(name) else os.path.join(HERE, name)
        problems = replay(host.strip("[]"), int(port), path)
        print(f"{'ok  ' if not problems else 'FAIL'} {os.path.basename(path)}" + "".join(f"\n     {p}" for p in problems))
        bad += bool(problems)
    print(f"{len(files) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
