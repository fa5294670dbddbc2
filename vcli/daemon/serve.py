"""Transports for the vpopmaild session: an asyncio listener, and stdin/stdout for
tcpserver, inetd and systemd socket activation.

Both read their own buffer (so pipelined commands and two-pipe stdio work, unlike
the real daemon), cap line length the way the real daemon's 1023-byte reads do,
time out idle clients, and slow down repeated failed logins per client address.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Callable

from .wire import Session

# where a webmail on this host connects from: exempt from the per-address cap unless
# `--throttle-loopback` (other 127.x addresses are treated like any address)
DEFAULT_TRUSTED = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
REFUSED_BUSY = b"-ERR 33.110 Not Available\r\n"  # --max-connections reached, or stopping
REFUSED_ADDRESS = b"-ERR 5.110 Too many invalid login attempts\r\n"  # --max-per-address reached

# asyncio is imported by the listener's methods only: a --stdio process (one per connection
# under tcpserver) starts without it.

# The listener runs every command in a thread, off the event loop: a write waiting for a domain
# lock (held by another worker process, or by this worker's group commit) never holds up the
# other connections.  Reads and logins have their own threads, so writers queued on one domain
# cannot take them all.
READ_THREADS = 8
WRITE_THREADS = 64


class Throttle:
    """A delay before answering a failed login, per client address: `base` after the first
    failure, doubling with each further one up to `cap`; the count decays by one for every
    `decay` seconds without a failure from that address.

    The table lives in anonymous shared memory of fixed size, so the worker processes forked
    after it is made share it and an address-spraying client cannot make it grow.  A slot
    holds one address (by a 64-bit digest); a colliding address takes the slot over, so one
    client's failures never slow down another.
    """

    SLOT = struct.Struct("<Qdd")  # address digest, failure level, time of the last failure

    def __init__(self, base: float = 0.1, cap: float = 5.0, decay: float = 10.0, slots: int = 4096):
        self.base, self.cap, self.decay, self.slots = base, cap, decay, slots
        self.table = mmap.mmap(-1, self.SLOT.size * slots)

    def _slot(self, addr: str) -> tuple[int, int]:
        key = int.from_bytes(hashlib.blake2b(addr.encode(), digest_size=8).digest(), "little") or 1
        return key, (key % self.slots) * self.SLOT.size

    def _level(self, addr: str, now: float) -> tuple[int, int, float]:
        key, off = self._slot(addr)
        k, level, last = self.SLOT.unpack_from(self.table, off)
        if k != key:
            return key, off, 0.0
        return key, off, max(0.0, level - (now - last) / self.decay) if self.decay > 0 else level

    def record(self, addr: str) -> None:
        now = time.monotonic()
        key, off, level = self._level(addr, now)
        self.SLOT.pack_into(self.table, off, key, level + 1, now)

    def delay(self, addr: str) -> float:
        level = self._level(addr, time.monotonic())[2]
        if level <= 0 or self.base <= 0:
            return 0.0
        # whole failures still counted (a fraction decayed off the last one still counts it):
        # `base` from the first failure on, not only once a second one has come
        return min(self.cap, self.base * 2 ** min(math.ceil(level) - 1, 64))


def split_long(line: bytes, max_line: int) -> list[bytes]:
    """The real daemon reads at most max_line bytes at a time: a longer line is several lines."""
    if len(line) <= max_line:
        return [line]
    return [line[i : i + max_line] for i in range(0, len(line), max_line)]


class _Conn:
    """One asyncio connection, as the shutdown code sees it."""

    __slots__ = ("task", "waiting")

    def __init__(self, task):
        self.task = task
        self.waiting = False  # True while waiting for the client (safe to cancel)


class _Stop(Exception):
    pass


class Server:
    def __init__(self, store_factory: Callable[[], object], *, idle_timeout: float = 60.0,
                 max_connections: int = 1000, max_line: int = 1023, audit: Callable[[str], None] | None = None,
                 log: Callable[[str], None] | None = None, throttle: Throttle | None = None,
                 max_per_address: int | None = None, trusted: set[str] | None = None,
                 qmail_programs: tuple[str, ...] | None = None):
        self.store_factory = store_factory
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_line = max_line
        self.audit = audit or (lambda line: None)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.throttle = throttle or Throttle()
        # an address with recent failed logins may hold at most this many connections: a
        # password-guessing flood that drops its connections unanswered cannot fill the daemon
        # with sessions sleeping out their delay (nor make it hash more than these at a time)
        self.max_per_address = max_per_address or max(1, max_connections // 10)
        self.per_address: dict[str, int] = {}
        # addresses many users share (a webmail on this host, a proxy): no per-address cap, and
        # the failed-login delay counts per login name tried from there, not for the address
        self.trusted = set(DEFAULT_TRUSTED if trusted is None else trusted)
        self.qmail_programs = qmail_programs
        self.active = 0
        self.stopping = False
        self.store = None
        self.committer = None  # the worker's group commit (commit.py), made with the store
        self.pools = None  # (reads, writes) thread pools of the listener, made in serve()
        self.conns: set[_Conn] = set()

    def _store(self):
        if self.store is None:
            self.store = self.store_factory()
        return self.store

    def _session(self, addr: str, grouped: bool = False) -> Session:
        """grouped: the session's user writes go through the worker's group commit (the listener;
        a --stdio process serves one connection, so there is nothing to group)."""
        writer = None
        if grouped:
            if self.committer is None:
                from .commit import GroupCommit

                self.committer = GroupCommit(self._store())
            writer = self.committer
        session = Session(self._store(), peer=addr, audit=self.audit, log=self.log,
                          qmail_programs=self.qmail_programs, writer=writer)
        session.on_login_failure = lambda: self.throttle.record(self._throttle_key(addr, session))
        return session

    def _throttle_key(self, addr: str, session: Session) -> str:
        return f"{addr} {session.failed_address}" if addr in self.trusted else addr

    def _refusal(self, addr: str) -> bytes | None:
        """The error line for a connection that is not served, or None."""
        if self.active >= self.max_connections or self.stopping:
            return REFUSED_BUSY
        if addr not in self.trusted and (self.per_address.get(addr, 0) >= self.max_per_address
                                         and self.throttle.delay(addr) > 0):
            return REFUSED_ADDRESS
        return None

    # --- asyncio listener ----------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # noqa: F821
        import asyncio

        peer = writer.get_extra_info("peername")
        addr = peer[0] if isinstance(peer, tuple) else "-"
        refused = self._refusal(addr)
        if refused:  # said, never a silent close
            try:
                writer.write(refused)
                await asyncio.wait_for(writer.drain(), 5)
                writer.close()
            except (ConnectionError, OSError, TimeoutError):
                pass
            return
        self.active += 1
        self.per_address[addr] = self.per_address.get(addr, 0) + 1
        conn = _Conn(asyncio.current_task())
        self.conns.add(conn)
        session = self._session(addr, grouped=True)
        loop = asyncio.get_running_loop()
        reads, writes = self.pools
        try:
            writer.write(session.greeting())
            await writer.drain()
            while not session.closed and not self.stopping:
                conn.waiting = True
                try:
                    raw = await asyncio.wait_for(self._readline(reader), self.idle_timeout)
                except TimeoutError:
                    raw = b""
                finally:
                    conn.waiting = False
                if not raw:  # idle too long, or EOF: the real daemon says the same for both
                    writer.write(session.timeout_reply())
                    await writer.drain()
                    break
                for piece in split_long(raw, self.max_line):
                    failures = session.failed_logins
                    pool = writes if session.may_write(piece) else reads
                    reply = await loop.run_in_executor(pool, session.feed, piece)
                    if session.failed_logins > failures:
                        await asyncio.sleep(self.throttle.delay(self._throttle_key(addr, session)))
                    if reply:
                        writer.write(reply)
                        await writer.drain()
                    if session.closed:
                        break
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        except Exception as exc:  # noqa: BLE001 - one connection's bug must not reach the others
            self.log(f"vpopmaild: {addr}: internal error: {exc!r}")
        finally:
            session.close()
            self.conns.discard(conn)
            self.active -= 1
            left = self.per_address.pop(addr) - 1
            if left:
                self.per_address[addr] = left
            try:
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (ConnectionError, OSError, TimeoutError, asyncio.CancelledError):
                pass

    async def _readline(self, reader: asyncio.StreamReader) -> bytes:  # noqa: F821
        """One line; an over-long one is returned in max_line pieces, never buffered whole.
        b'' at EOF."""
        import asyncio

        try:
            return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            try:
                return await reader.readexactly(min(max(exc.consumed, 1), self.max_line))
            except asyncio.IncompleteReadError as inner:
                return inner.partial

    async def serve(self, socks: list, ssl_ctx=None) -> None:
        """Accept on already-bound listening sockets until SIGTERM/SIGINT, then stop accepting,
        let the commands in flight finish and send their replies, and close every connection."""
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        # made here, in the worker process (threads do not survive a fork)
        self.pools = (ThreadPoolExecutor(READ_THREADS, thread_name_prefix="vpopmaild-read"),
                      ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="vpopmaild-write"))
        servers = []
        extra = {"ssl_handshake_timeout": max(1.0, min(self.idle_timeout, 60.0))} if ssl_ctx else {}
        for sock in socks:
            servers.append(await asyncio.start_server(self.handle, sock=sock, ssl=ssl_ctx,
                                                      limit=self.max_line + 2, **extra))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.stopping = True
        for s in servers:
            s.close()
        # A session waiting for its client is cancelled at once; one in the middle of a
        # command (run in a thread, never cancelled) or of sending its reply goes on to the end of it.
        for conn in list(self.conns):
            if conn.waiting:
                conn.task.cancel()
        pending = [c.task for c in self.conns]
        if pending:
            await asyncio.wait(pending, timeout=10)
        for pool in self.pools:
            pool.shutdown(wait=False)

    # --- stdio (tcpserver, inetd, systemd Accept=yes) ----------------------------------

    def serve_stdio(self, infd: int = 0, outfd: int = 1) -> int:
        addr = os.environ.get("TCPREMOTEIP") or os.environ.get("REMOTE_ADDR") or "-"
        session = self._session(addr)
        state = {"busy": False, "stop": False}

        def on_term(signum, frame):
            state["stop"] = True
            if not state["busy"]:
                raise _Stop

        signal.signal(signal.SIGTERM, on_term)
        out = os.fdopen(outfd, "wb", buffering=0, closefd=False)

        def send(data: bytes) -> None:
            view = memoryview(data)
            while view:
                n = out.write(view)
                view = view[n:]

        try:
            send(session.greeting())
            buf = b""
            eof = False
            while not session.closed and not state["stop"]:
                nl = buf.find(b"\n")
                if nl < 0 and len(buf) < self.max_line and not eof:
                    ready, _, _ = select.select([infd], [], [], self.idle_timeout)
                    if not ready:
                        send(session.timeout_reply())
                        break
                    chunk = os.read(infd, 65536)
                    if not chunk:
                        eof = True
                    buf += chunk
                    continue
                if nl >= 0:
                    raw, buf = buf[: nl + 1], buf[nl + 1 :]
                elif buf:
                    raw, buf = buf[: self.max_line], buf[self.max_line :]
                else:  # EOF and nothing left: the real daemon answers as for a timeout
                    send(session.timeout_reply())
                    break
                state["busy"] = True
                for piece in split_long(raw, self.max_line):
                    failures = session.failed_logins
                    reply = session.feed(piece)
                    if session.failed_logins > failures:
                        time.sleep(self.throttle.delay(self._throttle_key(addr, session)))
                    if reply:
                        send(reply)
                    if session.closed:
                        break
                state["busy"] = False
        except _Stop:
            pass
        except (BrokenPipeError, ConnectionError):
            pass
        finally:
            session.close()
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
    import asyncio

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
