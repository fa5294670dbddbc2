"""Transports for the vpopmaild session: an asyncio listener, and stdin/stdout for
tcpserver, inetd and systemd socket activation.

Both read their own buffer (so pipelined commands and two-pipe stdio work, unlike
the real daemon), cap line length the way the real daemon's 1023-byte reads do,
time out idle clients, and slow down repeated failed logins per client address.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sys
import time
from collections.abc import Callable

from .wire import Session


class Throttle:
    """A delay before answering a failed login that doubles with each failure from the same
    address (0.1 s, 0.2 s, … capped) and is forgotten after a quiet minute."""

    def __init__(self, base: float = 0.1, cap: float = 5.0, forget: float = 60.0):
        self.base, self.cap, self.forget = base, cap, forget
        self.failures: dict[str, tuple[int, float]] = {}

    def record(self, addr: str) -> None:
        n, last = self.failures.get(addr, (0, 0.0))
        now = time.monotonic()
        if now - last > self.forget:
            n = 0
        self.failures[addr] = (n + 1, now)
        if len(self.failures) > 100_000:  # bounded memory under an address-spraying attack
            cutoff = now - self.forget
            self.failures = {a: v for a, v in self.failures.items() if v[1] >= cutoff}

    def delay(self, addr: str) -> float:
        n, last = self.failures.get(addr, (0, 0.0))
        if not n or time.monotonic() - last > self.forget:
            return 0.0
        return min(self.cap, self.base * (2 ** (n - 1)))


def split_long(line: bytes, max_line: int) -> list[bytes]:
    """The real daemon reads at most max_line bytes at a time: a longer line is several lines."""
    if len(line) <= max_line:
        return [line]
    return [line[i : i + max_line] for i in range(0, len(line), max_line)]


class Server:
    def __init__(self, store_factory: Callable[[], object], *, idle_timeout: float = 60.0,
                 max_connections: int = 1000, max_line: int = 1023, audit: Callable[[str], None] | None = None,
                 log: Callable[[str], None] | None = None, throttle: Throttle | None = None):
        self.store_factory = store_factory
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_line = max_line
        self.audit = audit or (lambda line: None)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.throttle = throttle or Throttle()
        self.active = 0
        self.busy = 0  # sessions in the middle of a command
        self.stopping = False
        self.store = None

    def _store(self):
        if self.store is None:
            self.store = self.store_factory()
        return self.store

    # --- asyncio listener ----------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr = peer[0] if isinstance(peer, tuple) else "-"
        if self.active >= self.max_connections or self.stopping:
            writer.close()
            return
        self.active += 1
        session = Session(self._store(), peer=addr, audit=self.audit,
                          login_failed=lambda: self.throttle.record(addr))
        try:
            writer.write(session.greeting())
            await writer.drain()
            while not session.closed and not self.stopping:
                try:
                    raw = await asyncio.wait_for(self._readline(reader), self.idle_timeout)
                except TimeoutError:
                    writer.write(session.timeout_reply())
                    break
                if raw is None:  # EOF
                    break
                for piece in split_long(raw, self.max_line):
                    failures = session.failed_logins
                    self.busy += 1
                    try:
                        reply = session.feed(piece)
                    finally:
                        self.busy -= 1
                    if session.failed_logins > failures:
                        await asyncio.sleep(self.throttle.delay(addr))
                    if reply:
                        writer.write(reply)
                        await writer.drain()
                    if session.closed:
                        break
        except (ConnectionError, OSError):
            pass
        finally:
            self.active -= 1
            try:
                writer.close()
            except (ConnectionError, OSError):
                pass

    async def _readline(self, reader: asyncio.StreamReader) -> bytes | None:
        """One line; an over-long one is returned in max_line pieces, never buffered whole."""
        try:
            return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial or None
        except asyncio.LimitOverrunError as exc:
            return await reader.readexactly(min(exc.consumed, self.max_line))

    async def serve(self, endpoints: list[tuple[str, int]], ssl_ctx=None, on_ready=None) -> None:
        servers = []
        for host, port in endpoints:
            servers.append(await asyncio.start_server(self.handle, host, port, ssl=ssl_ctx,
                                                      limit=self.max_line + 2, reuse_address=True))
        for s in servers:
            for sock in s.sockets:
                self.log(f"vpopmaild: listening on {sock.getsockname()[0]}:{sock.getsockname()[1]}")
        if on_ready:
            on_ready()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.stopping = True
        for s in servers:
            s.close()
        # let the command in flight finish: feed() is synchronous, so once the loop runs
        # here no command is half-done; give writers a moment to flush
        deadline = time.monotonic() + 5
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.log("vpopmaild: stopped")

    # --- stdio (tcpserver, inetd, systemd Accept=yes) ----------------------------------

    def serve_stdio(self, infd: int = 0, outfd: int = 1) -> int:
        addr = os.environ.get("TCPREMOTEIP") or os.environ.get("REMOTE_ADDR") or "-"
        session = Session(self._store(), peer=addr, audit=self.audit,
                          login_failed=lambda: self.throttle.record(addr))
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__("now", True))
        out = os.fdopen(outfd, "wb", buffering=0, closefd=False)

        def send(data: bytes) -> None:
            view = memoryview(data)
            while view:
                n = out.write(view)
                view = view[n:]

        send(session.greeting())
        buf = b""
        eof = False
        while not session.closed and not stop["now"]:
            nl = buf.find(b"\n")
            if nl < 0 and len(buf) < self.max_line and not eof:
                ready, _, _ = select.select([infd], [], [], self.idle_timeout)
                if not ready:
                    send(session.timeout_reply())
                    return 0
                chunk = os.read(infd, 65536)
                if not chunk:
                    eof = True
                buf += chunk
                continue
            if nl >= 0:
                raw, buf = buf[: nl + 1], buf[nl + 1 :]
            elif buf:
                raw, buf = buf[: self.max_line], buf[self.max_line :]
            else:
                break  # EOF and nothing left
            for piece in split_long(raw, self.max_line):
                failures = session.failed_logins
                reply = session.feed(piece)
                if session.failed_logins > failures:
                    time.sleep(self.throttle.delay(addr))
                if reply:
                    send(reply)
                if session.closed:
                    break
        return 0
