"""A vpopmaild protocol client that keeps to what the real C daemon sends.

One command at a time (the real daemon cannot take pipelined commands), replies
read to their end (`+OK ` line, or `+OK+` … `.`), `-ERR` lines turned into the
same exceptions the local store raises, so the CLI's exit codes do not depend on
the backend.
"""

from __future__ import annotations

import socket

from ..errors import (
    VERROR_TEXT,
    AliasNotFound,
    DomainNotFound,
    LoginFailed,
    NotAuthorized,
    ProtocolError,
    RemoteUnavailable,
    UsageError,
    UserNotFound,
    VcliError,
    VpopError,
)

_TEXT_TO_CODE = {text: code for code, text in VERROR_TEXT.items()}
DEFAULT_PORT = 89


class RemoteError(VcliError):
    """A -ERR the client has no better class for; exit 1, the daemon's text."""


def error_from_reply(line: str) -> VcliError:
    """Map a `-ERR major.minor text` line (and its odd forms) onto the local exceptions."""
    body = line[5:] if line.startswith("-ERR ") else line
    code, _, text = body.partition(" ")
    major = code.replace(",", ".").split(".")[0]
    if major == "0":
        vcode = _TEXT_TO_CODE.get(text.rstrip(".").rstrip())
        if vcode is not None:
            return VpopError.for_code(vcode)
        if text.startswith("password "):
            return VpopError(text, -70)
        return RemoteError(text or line)
    if major in ("8", "5"):
        return LoginFailed(text or "Invalid Login")
    if major in ("9", "11", "3801", "3804", "3901", "3903") or "not authorized" in text.lower():
        return NotAuthorized(f"not authorized: {text}")
    if major in ("12", "3805"):
        return UserNotFound()
    if major == "4":
        return NotAuthorized(f"the server refused the command ({text}): not allowed at this login's level")
    if major == "19" or major == "18":
        return AliasNotFound(text)
    if major == "34":
        return DomainNotFound()
    if major in ("6", "7", "13", "14", "16", "27", "30"):
        return UsageError(text)
    return RemoteError(f"{text} ({code})")


class Connection:
    def __init__(self, host: str, port: int = DEFAULT_PORT, timeout: float = 30.0, tls: bool = False,
                 ca_file: str | None = None, connect_timeout: float = 10.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.tls, self.ca_file, self.connect_timeout = tls, ca_file, connect_timeout
        self.sock: socket.socket | None = None
        self.buf = b""
        self.login_info: dict[str, str] = {}
        self.level_style = "compact"

    # --- transport ------------------------------------------------------------

    def connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError:
            raise RemoteUnavailable(f"connection to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise RemoteUnavailable(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        if self.tls:
            import ssl

            ctx = ssl.create_default_context(cafile=self.ca_file)
            try:
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise RemoteUnavailable(f"TLS with {self.host}:{self.port} failed: {exc}") from None
        sock.settimeout(self.timeout)
        try:  # small request/reply lines: never wait for a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.sock, self.buf = sock, b""
        greeting = self.readline()
        if greeting.startswith("-ERR"):  # a daemon that is busy or refuses this address says so
            self.close()
            raise RemoteUnavailable(f"{self.host}:{self.port} refused the session: {greeting[5:]}")
        if not greeting.startswith("+OK"):
            self.close()
            raise RemoteUnavailable(f"{self.host}:{self.port} is not a vpopmaild: {greeting!r}")

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(b"quit\r\n")
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    def send(self, line: str) -> None:
        if self.sock is None:
            raise RemoteUnavailable("not connected")
        if any(c in line for c in "\r\n\0"):
            raise UsageError("a protocol line cannot contain CR, LF or NUL")
        try:
            self.sock.sendall(line.encode("utf-8", "surrogateescape") + b"\r\n")
        except OSError as exc:
            raise RemoteUnavailable(f"connection to {self.host}:{self.port} lost: {exc.strerror or exc}") from None

    def readline(self) -> str:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536) if self.sock else b""
            except TimeoutError:
                raise RemoteUnavailable(f"{self.host}:{self.port} did not answer in {self.timeout:g} s") from None
            except OSError as exc:
                raise RemoteUnavailable(f"connection to {self.host}:{self.port} lost: {exc.strerror or exc}") from None
            if not chunk:
                raise RemoteUnavailable(f"{self.host}:{self.port} closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "surrogateescape")

    # --- replies ----------------------------------------------------------------

    def _data(self) -> list[str]:
        out = []
        while True:
            line = self.readline()
            if line == ".":
                return out
            out.append(line)

    def simple(self, line: str) -> None:
        """A command answered by `+OK `."""
        self.send(line)
        reply = self.readline()
        if reply.startswith("-ERR"):
            raise error_from_reply(reply)
        if not reply.startswith("+OK"):
            raise ProtocolError(f"unexpected reply to {line.split()[0]}: {reply!r}")
        if reply.startswith("+OK+"):
            self._data()

    def multi(self, line: str) -> list[str]:
        """A command answered by `+OK+`, data lines, `.`."""
        self.send(line)
        reply = self.readline()
        if reply.startswith("-ERR"):
            raise error_from_reply(reply)
        if reply == ".":  # list_alias of a missing alias: the +OK+ is never sent
            return []
        if not reply.startswith("+OK+"):
            raise ProtocolError(f"unexpected reply to {line.split()[0]}: {reply!r}")
        return self._data()

    def login(self, address: str, password: str) -> dict[str, str]:
        """clogin: compact flags for the whole session; returns the login block."""
        self.send(f"clogin {address} {password}")
        reply = self.readline()
        if reply.startswith("-ERR"):
            err = error_from_reply(reply)
            raise LoginFailed(f"login as {address} failed: {err.message}")
        if not reply.startswith("+OK+"):
            raise ProtocolError(f"unexpected reply to login: {reply!r}")
        self.login_info = pairs(self._data())
        return self.login_info

    def mod_user(self, address: str, options: list[tuple[str, str]]) -> None:
        """The two-reply mod_user; option lines go only after the first `+OK `."""
        self.block(f"mod_user {address}", [f"{name} {value}" for name, value in options])

    def block(self, command: str, lines: list[str]) -> None:
        """A two-reply command (mod_user, set_limits): option lines go only after the first `+OK `;
        `  Warning: …` lines before the final reply are skipped."""
        self.send(command)
        first = self.readline()
        if first.startswith("-ERR"):
            raise error_from_reply(first)
        if any(c in x for x in lines for c in "\r\n\0"):
            raise UsageError("a protocol line cannot contain CR, LF or NUL")
        # all option lines and the end in one write; a bare ".\n" also ends the real daemon's drain
        data = "".join(x + "\r\n" for x in lines).encode("utf-8", "surrogateescape") + b".\n"
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise RemoteUnavailable(f"connection to {self.host}:{self.port} lost: {exc.strerror or exc}") from None
        second = self.readline()
        while second.startswith("  Warning"):
            second = self.readline()
        if second.startswith("-ERR"):
            raise error_from_reply(second)


def pairs(lines: list[str]) -> dict[str, str]:
    """`name value` lines (value = rest of line, may be empty) as a dict."""
    out: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(" ")
        out.setdefault(name, value)
    return out


def user_blocks(lines: list[str]) -> list[dict[str, str]]:
    """list_users output: user info blocks separated by empty lines (skipped users give bare empty lines)."""
    blocks, cur = [], {}
    for line in lines:
        if not line:
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        name, _, value = line.partition(" ")
        cur.setdefault(name, value)
    if cur:
        blocks.append(cur)
    return blocks


def is_not_found(exc: Exception) -> bool:
    return isinstance(exc, UserNotFound | DomainNotFound)
