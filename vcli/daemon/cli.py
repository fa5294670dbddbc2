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
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"not ADDR:PORT: {text!r}")
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


def _drop_privileges(name: str | None) -> None:
    if os.geteuid() != 0:
        return
    import grp
    import pwd

    try:
        pw = pwd.getpwnam(name or "vpopmail")
    except KeyError:
        if name:
            raise SystemExit(f"vpopmaild: no user {name!r}") from None
        print("vpopmaild: warning: running as root (no vpopmail user; use --user)", file=sys.stderr)
        return
    try:
        gid = grp.getgrnam("vchkpw").gr_gid if name is None else pw.pw_gid
    except KeyError:
        gid = pw.pw_gid
    os.setgroups([])
    os.setgid(gid)
    os.setuid(pw.pw_uid)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..config import load_settings
    from ..errors import VcliError
    from ..store.store import Store
    from .serve import Server, Throttle

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

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

    if args.max_line < 2 or args.idle_timeout <= 0 or args.max_connections < 1 or (
            args.max_per_address is not None and args.max_per_address < 1):
        log("vpopmaild: --max-line must be at least 2, --idle-timeout, --max-connections and "
            "--max-per-address positive")
        return 64
    server = Server(store_factory, idle_timeout=args.idle_timeout, max_connections=args.max_connections,
                    max_per_address=args.max_per_address, max_line=args.max_line, audit=audit, log=log,
                    throttle=Throttle(base=args.login_delay, cap=args.login_delay_max))
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
        socks = bind(endpoints)
    except OSError as exc:
        log(f"vpopmaild: cannot listen: {exc.strerror or exc}")
        return 69
    for sock in socks:
        host, port = sock.getsockname()[:2]
        log(f"vpopmaild: listening on {host}:{port}")
    _drop_privileges(args.user)
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
