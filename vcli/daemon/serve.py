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

    async def serve(self, socks: list, ssl_ctx=None) -> None:
        """Accept on already-bound listening sockets until SIGTERM/SIGINT."""
        servers = []
        for sock in socks:
            servers.append(await asyncio.start_server(self.handle, sock=sock, ssl=ssl_ctx,
                                                      limit=self.max_line + 2))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.stopping = True
        for s in servers:
            s.close()
        # feed() runs to its end once started, so no command is ever half-done; give the
        # replies in flight a moment to reach their clients
        deadline = time.monotonic() + 5
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


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


def bind(endpoints: list[tuple[str, int]]) -> list:
    """Listening sockets for (host, port) pairs; IPv6 when the host is."""
    import socket

    socks = []
    for host, port in endpoints:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def run_workers(server: Server, socks: list, ssl_ctx, workers: int, log) -> int:
    """Serve the sockets with `workers` processes (hashing a password holds the GIL, so one
    process would use one core).  The parent forwards SIGTERM and waits for the commands in flight."""
    if workers <= 1:
        asyncio.run(server.serve(socks, ssl_ctx))
        return 0
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                asyncio.run(server.serve(socks, ssl_ctx))
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
                code = 70
            os._exit(code)
        children.append(pid)
    for sock in socks:
        sock.close()

    def forward(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        worst = max(worst, os.waitstatus_to_exitcode(status) if status else 0)
    return worst if worst > 0 else 0
