"""`vpopmaild` / `vcli vpopmaild`: start the vpopmaild-compatible server.

argparse, not typer: under tcpserver a process starts for every connection.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

DEFAULT_LISTEN = "127.0.0.1:8900"


def parse_listen(text: str) -> tuple[str, int]:
    """'ADDR:PORT', '[v6]:PORT' or ':PORT' -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"not ADDR:PORT (port 0-65535): {text!r}")
    return host or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpopmaild",
        description="A vpopmaild-compatible server on the local vpopmail store. Listens on "
                    f"{DEFAULT_LISTEN} by default; --stdio serves one session on stdin/stdout "
                    "(tcpserver, inetd, systemd Accept=yes).")
    p.add_argument("--listen", action="append", type=parse_listen, metavar="ADDR:PORT",
                   help=f"address to listen on, repeatable; IPv6 as [::1]:8900 (default {DEFAULT_LISTEN})")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow listening on a non-loopback address (the protocol carries passwords)")
    p.add_argument("--stdio", action="store_true", help="serve one session on stdin/stdout")
    p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--user", metavar="NAME",
                   help="started as root: drop to this user after binding (default: vpopmail, if it exists)")
    p.add_argument("--vpopmail-dir", metavar="DIR", help="the vpopmail home (default as for vcli)")
    p.add_argument("--qmail-dir", metavar="DIR", help="the qmail directory (default as for vcli)")
    p.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="close a client idle this long (default 60, as the real daemon)")
    p.add_argument("--max-connections", type=int, default=1000, metavar="N",
                   help="refuse connections beyond N at once (default 1000)")
    p.add_argument("--max-per-address", type=int, default=None, metavar="N",
                   help="refuse connections beyond N at once from an address with recent failed logins "
                        "(default a tenth of --max-connections)")
    p.add_argument("--trusted", action="append", default=[], metavar="ADDR",
                   help="a client address many users share (a webmail host, a proxy), repeatable: no "
                        "--max-per-address cap, failed-login delay per login name (127.0.0.1 and ::1 are "
                        "trusted by default)")
    p.add_argument("--throttle-loopback", action="store_true",
                   help="treat 127.0.0.1 and ::1 like any other address (cap and delay per address)")
    p.add_argument("--qmail-programs", metavar="NAME,...",
                   help="programs a `|` line of a .qmail file written through write_file may run without "
                        "system admin or expert privileges, by basename (default: autorespond, "
                        "vdelivermail and ezmlm's programs)")
    p.add_argument("--max-line", type=int, default=1023, metavar="BYTES",
                   help="longest input line; longer ones are split as the real daemon does (default 1023)")
    p.add_argument("--login-delay", type=float, default=0.1, metavar="SECONDS",
                   help="delay after a client address's first failed login; doubles with each further one "
                        "(default 0.1; 0 turns the throttle off)")
    p.add_argument("--login-delay-max", type=float, default=5.0, metavar="SECONDS",
                   help="the longest failed-login delay (default 5)")
    p.add_argument("--audit-log", metavar="FILE", help="append one line per change here (default: stderr)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="processes accepting connections (default: one per core; --max-connections is shared "
                        "out among them, the failed-login throttle is common to all)")
    return p


class _Refuse(Exception):
    """A start-up problem: one line on stderr, exit 78 (EX_CONFIG)."""


def _target_user(name: str | None) -> tuple[str, int, int] | None:
    """(name, uid, gid) to drop to after binding, or None (not root, or root with no vpopmail user)."""
    import grp
    import pwd

    if os.geteuid() != 0 and not name:
        return None
    try:
        pw = pwd.getpwnam(name or "vpopmail")
    except KeyError:
        if name:
            raise _Refuse(f"no user {name!r} (--user)") from None
        print("vpopmaild: warning: running as root (no vpopmail user; use --user)", file=sys.stderr)
        return None
    if os.geteuid() != 0:
        if pw.pw_uid != os.geteuid():
            raise _Refuse(f"--user {name} needs the daemon started as root")
        return None
    try:
        gid = grp.getgrnam("vchkpw").gr_gid if name is None else pw.pw_gid
    except KeyError:
        gid = pw.pw_gid
    return pw.pw_name, pw.pw_uid, gid


def _drop_privileges(target: tuple[str, int, int] | None) -> None:
    if target is None:
        return
    _name, uid, gid = target
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def _preload(tls: bool, auth_module: str = "cdb") -> None:
    """Import now what the sessions use later: once privileges are dropped the interpreter's
    own files may be unreadable (Python or the venv under /root), and the workers are forked
    from this process, so what is loaded here is all they need -- on an SQL site the driver too
    (its connections are opened in each worker, after the fork)."""
    import asyncio  # noqa: F401
    import concurrent.futures.process  # noqa: F401
    import concurrent.futures.thread  # noqa: F401 - the listener runs commands in threads
    import hmac  # noqa: F401
    import json  # noqa: F401
    import pkgutil
    import secrets  # noqa: F401
    import shutil  # noqa: F401
    import socket  # noqa: F401
    import subprocess  # noqa: F401

    from ..store.passwords import crypt_function

    crypt_function()  # password checks and hashes

    if tls:
        import ssl  # noqa: F401
    import importlib

    from .. import store

    for mod in pkgutil.iter_modules(store.__path__, store.__name__ + "."):
        importlib.import_module(mod.name)
    from ..store import passwords
    from ..store.auth import cdb  # noqa: F401 - the auth module Store() opens
    if auth_module in ("mysql", "pgsql"):
        module = importlib.import_module(f"vcli.store.auth.{auth_module}")
        preload = getattr(module, "preload_driver", None)
        if preload is not None:
            preload()
    from . import commit, serve, wire  # noqa: F401

    try:
        passwords.verify_password("x", "$6$saltsalt$x")  # loads what crypt(3) loads on first use
    except Exception:  # noqa: BLE001 - a crypt that cannot do this fails the same way in a session
        pass


def _check_access(target: tuple[str, int, int], paths: list[tuple[str, int]]) -> None:
    """As the target user (in a forked child), every (path, os.access mode) must pass; else the
    daemon would start and then fail every session."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only tests and reports
        os.close(rfd)
        code = 0
        try:
            _drop_privileges(target)
            bad = next((p for p, mode in paths if not os.access(p, mode)), None)
            if bad is not None:
                os.write(wfd, bad.encode("utf-8", "surrogateescape"))
                code = 1
        except BaseException:  # noqa: BLE001 - whatever happens, the child must not return
            code = 2
        os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        bad = f.read().decode("utf-8", "surrogateescape")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 1:
        raise _Refuse(f"user {target[0]} cannot read {bad}: the store must be readable by the user "
                      "the daemon runs as (--user)")
    if code:
        raise _Refuse(f"cannot switch to user {target[0]} (--user)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's status 2 for a bad option: EX_USAGE, as README's table says
        return 64 if exc.code == 2 else (exc.code or 0)
    from ..config import load_settings
    from ..errors import VcliError
    from ..store.store import Store
    from .serve import DEFAULT_TRUSTED, Server, Throttle

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    target = None
    if not args.stdio:
        try:
            target = _target_user(args.user)
        except _Refuse as exc:
            log(f"vpopmaild: {exc}")
            return 78

    audit_file = None
    if args.audit_log:
        audit_file = open(args.audit_log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives with the process

    def audit(line: str) -> None:
        print(line, file=audit_file or sys.stderr, flush=True)

    try:
        settings = load_settings({"vpopmail_dir": args.vpopmail_dir, "qmail_dir": args.qmail_dir}, announce=log)
    except VcliError as exc:
        log(f"vpopmaild: {exc.message}")
        return exc.exit_code

    def store_factory():
        return Store(settings, warn=log)

    try:
        store_factory()  # a site whose auth module this vcli lacks: one line now, not a failure per session
    except VcliError as exc:
        log(f"vpopmaild: {exc.message}")
        return exc.exit_code

    if args.max_line < 2 or args.idle_timeout <= 0 or args.max_connections < 1 or (
            args.max_per_address is not None and args.max_per_address < 1):
        log("vpopmaild: --max-line must be at least 2, --idle-timeout, --max-connections and "
            "--max-per-address positive")
        return 64
    trusted = set() if args.throttle_loopback else set(DEFAULT_TRUSTED)
    try:
        trusted |= {str(ipaddress.ip_address(a)) for a in args.trusted}
    except ValueError as exc:
        log(f"vpopmaild: --trusted: {exc}")
        return 64
    programs = None
    if args.qmail_programs is not None:
        programs = tuple(x.strip() for x in args.qmail_programs.split(",") if x.strip())
        if any("/" in x for x in programs):
            log("vpopmaild: --qmail-programs takes program names, not paths")
            return 64
    server = Server(store_factory, idle_timeout=args.idle_timeout, max_connections=args.max_connections,
                    max_per_address=args.max_per_address, max_line=args.max_line, audit=audit, log=log,
                    throttle=Throttle(base=args.login_delay, cap=args.login_delay_max), trusted=trusted,
                    qmail_programs=programs)
    if args.stdio:
        return server.serve_stdio()
    endpoints = args.listen or [parse_listen(DEFAULT_LISTEN)]
    for host, _port in endpoints:
        if not is_loopback(host):
            if not args.allow_remote:
                log(f"vpopmaild: refusing to listen on {host}: the protocol carries passwords; "
                    "add --allow-remote (and --tls-cert/--tls-key) to do it")
                return 64
            log(f"vpopmaild: warning: listening on non-loopback {host}"
                + ("" if args.tls_cert else " without TLS: passwords cross the network in clear"))
    ssl_ctx = None
    if args.tls_cert:
        import ssl

        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(args.tls_cert, args.tls_key)
    from .serve import bind, run_workers

    try:
        _preload(bool(ssl_ctx), settings.auth_module)
        if target is not None:
            qmail_users = os.path.join(settings.qmail_dir, "users")
            _check_access(target, [(settings.vpopmail_dir, os.X_OK),
                                   (os.path.join(settings.vpopmail_dir, "domains"), os.R_OK | os.X_OK),
                                   (qmail_users, os.X_OK), (os.path.join(qmail_users, "assign"), os.R_OK)])
    except _Refuse as exc:
        log(f"vpopmaild: {exc}")
        return 78
    try:
        socks = bind(endpoints)
    except OSError as exc:
        log(f"vpopmaild: cannot listen: {exc.strerror or exc}")
        return 69
    for sock in socks:
        host, port = sock.getsockname()[:2]
        log(f"vpopmaild: listening on {host}:{port}")
    _drop_privileges(target)
    workers = max(1, args.workers)
    server.max_connections = max(1, -(-args.max_connections // workers))
    server.max_per_address = max(1, -(-server.max_per_address // workers))
    try:
        code = run_workers(server, socks, ssl_ctx, workers, log)
    except KeyboardInterrupt:
        code = 0
    log("vpopmaild: stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
