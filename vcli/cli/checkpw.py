"""The checkpassword interface: `vchkpw` (vpopmail's, local store) and `vcheckpassword`
(`vcli checkpassword`: local, or through a vpopmaild with --remote/--profile).

Both read `login\\0password\\0timestamp\\0` (at most 512 bytes) from fd 3, check it, and on
success exec the program named by their arguments with USER, HOME, SHELL and VPOPUSER set.
They differ in their exit codes only: vchkpw keeps vpopmail's own (spec/tools.md §12: 3 bad
password, 1 service closed by a flag, 11 bad fd 3 ...), vcheckpassword keeps the checkpassword
standard's (1 refused, 2 misuse, 111 temporary) that Dovecot and SMTP AUTH patches read.
A store or daemon that cannot answer is always 111 (temporary), never "bad password".
Runs once per login: no typer, and the store is imported only when it is needed.
"""

from __future__ import annotations

import os
import sys

from .. import flags as F

MAX_INPUT = 512  # the checkpassword interface's limit
SERVICE_FLAG = {svc: F.BY_NAME[name].bit for svc, name in
                (("pop", "NO_POP"), ("webmail", "NO_WEBMAIL"), ("imap", "NO_IMAP"), ("smtp", "NO_SMTP"))}
PORTS = {"25": "smtp", "465": "smtp", "587": "smtp", "110": "pop", "995": "pop", "143": "imap", "993": "imap"}

# refusal kind -> (vchkpw exit, vcheckpassword exit)
CODES = {
    "input": (11, 2), "usage": (2, 2), "empty_login": (12, 1), "empty_password": (13, 1),
    "bad_chars": (20, 1), "unknown": (3, 1), "bad_password": (3, 1), "no_password": (15, 1),
    "flag": (1, 1), "setgid": (4, 111), "setuid": (5, 111), "chdir": (6, 111), "temp": (111, 111),
}
CREDENTIAL_FAILURES = ("unknown", "bad_password", "no_password", "bad_chars")  # these wait before exiting


FD3_OPEN = [True]  # looked at first thing, before any import could open a file at fd 3


class Refused(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def read_request(fd: int = 3) -> tuple[str, str]:
    """(login, password) from the checkpassword input on fd 3 (the timestamp is not used)."""
    if not FD3_OPEN[0]:
        raise Refused("input", "fd 3 is not open: run as a checkpassword program "
                               "(qmail-popup, qmail-smtpd AUTH, Dovecot) with login\\0password\\0 on fd 3") from None
    data = b""
    while len(data) <= MAX_INPUT:
        try:
            chunk = os.read(fd, MAX_INPUT + 1 - len(data))
        except InterruptedError:
            continue
        except OSError as exc:
            raise Refused("input", f"cannot read fd 3: {exc.strerror}") from None
        if not chunk:
            break
        data += chunk
    if len(data) > MAX_INPUT:
        raise Refused("input", f"more than {MAX_INPUT} bytes on fd 3")
    parts = data.split(b"\0")
    if len(parts) < 3:
        raise Refused("input", "fd 3 must hold login\\0password\\0 (NUL after each); got "
                      + ("nothing" if not data else f"{len(data)} bytes with {len(parts) - 1} NUL"))
    login, password = (p.decode("utf-8", "surrogateescape") for p in parts[:2])
    if not login:
        raise Refused("empty_login", "empty login")
    if not password:
        raise Refused("empty_password", "empty password")
    return login, password


def service(program: str, env=os.environ) -> str:
    """pop, imap, smtp or webmail: TCPLOCALPORT, else Dovecot's SERVICE, else the program's name
    (spec §12); POP/IMAP from 127.0.0.1 is webmail."""
    svc = PORTS.get(env.get("TCPLOCALPORT", ""))
    if svc is None:
        s = env.get("SERVICE", "").lower()
        if s in ("smtp", "submission"):
            svc = "smtp"
        elif s.startswith("imap"):
            svc = "imap"
        elif s.startswith("pop3"):
            svc = "pop"
        else:
            svc = "smtp" if "true" in program else "imap" if "imap" in program else "pop"
    if svc != "smtp" and env.get("TCPREMOTEIP") == "127.0.0.1":
        svc = "webmail"
    return svc


def fail_delay() -> float:
    """Seconds a failed login waits before exiting (VCLI_AUTH_FAIL_DELAY, default 2)."""
    try:
        return max(0.0, float(os.environ.get("VCLI_AUTH_FAIL_DELAY", "2")))
    except ValueError:
        return 2.0


# --- the local store --------------------------------------------------------------


def check_local(login: str, password: str, svc: str):
    """(store, user record, real domain) when the password is right and the service open."""
    from ..config import load_settings
    from ..errors import DomainNotFound, IllegalUsername, TooLong, UserNotFound, VcliError
    from ..store.passwords import verify_password
    from ..store.store import Store

    try:
        settings = load_settings(announce=lambda m: None)
        if not os.path.isdir(settings.vpopmail_dir):
            raise Refused("temp", f"vpopmail directory {settings.vpopmail_dir} missing")
        store = Store(settings)
        try:
            user, domain = store.parse_address(login)
        except (IllegalUsername, TooLong):
            raise Refused("bad_chars", f"invalid login {login!r}") from None
        if not domain:
            raise Refused("unknown", f"no domain in {login!r} and no default domain")
        try:
            real = store.real_entry(domain).real
            vu = store.get_user(user, domain)
        except (UserNotFound, DomainNotFound):
            raise Refused("unknown", f"unknown user {user}@{domain}") from None
        if not vu.passwd or vu.passwd.split("}", 1)[-1] == "":
            raise Refused("no_password", f"{user}@{domain} has no password")
        if not verify_password(password, vu.passwd):
            raise Refused("bad_password", f"password fail {user}@{domain}")
        if store.effective_flags(vu, real) & SERVICE_FLAG[svc]:
            raise Refused("flag", f"{svc} access closed for {user}@{domain}")
        return store, vu, real
    except Refused:
        raise
    except (VcliError, OSError) as exc:  # store unreadable, locked, corrupt: try again later
        raise Refused("temp", f"store: {getattr(exc, 'message', None) or exc}") from None


def enter_mailbox(store, vu, real: str, svc: str, env: dict) -> None:
    """What vchkpw does before exec for POP/IMAP: lastauth, the domain's uid/gid, chdir to the
    user's dir, a missing Maildir re-created. Dovecot (SERVICE set) gets userdb_uid/userdb_gid
    instead of a setuid, which its checkpassword-reply refuses."""
    from ..store.fsutil import Owner

    entry = store.real_entry(real)
    try:
        store.set_lastauth(vu, real, env.get("TCPREMOTEIP") or "0.0.0.0")
    except Exception as exc:  # noqa: BLE001 - a login does not fail over its log record
        print(f"{os.path.basename(sys.argv[0])}: lastauth of {vu.name}@{real} not written: {exc}", file=sys.stderr)
    if svc == "smtp":
        return
    dovecot = "SERVICE" in env
    if dovecot:
        env["userdb_uid"], env["userdb_gid"] = str(entry.uid), str(entry.gid)
        env["EXTRA"] = (env.get("EXTRA", "") + " userdb_uid userdb_gid").strip()
    else:
        if os.getgid() != entry.gid or os.getegid() != entry.gid:
            try:
                if os.geteuid() == 0:
                    os.setgroups([entry.gid])
                os.setgid(entry.gid)
            except OSError as exc:
                raise Refused("setgid", f"setgid {entry.gid}: {exc.strerror}") from None
        if os.getuid() != entry.uid or os.geteuid() != entry.uid:
            try:
                os.setuid(entry.uid)
            except OSError as exc:
                raise Refused("setuid", f"setuid {entry.uid}: {exc.strerror}") from None
    try:
        if not dovecot:
            os.chdir(vu.dir)
        maildir = os.path.join(vu.dir, "Maildir")
        owner = Owner(entry.uid, entry.gid) if dovecot and os.geteuid() == 0 else Owner()
        for sub in ("", "cur", "new", "tmp"):
            path = os.path.join(maildir, sub) if sub else maildir
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)
                owner.apply(path)
    except OSError as exc:
        raise Refused("chdir", f"{vu.dir}: {exc.strerror}") from None


# --- a vpopmaild ------------------------------------------------------------------


def check_remote(login: str, password: str, svc: str, remote: str, timeout: float, tls: bool, ca_file):
    """The user's login block from a vpopmaild (one `clogin`), when right and the service open."""
    import signal

    from ..backend import split_hostport
    from ..errors import LoginFailed, UsageError, VcliError
    from ..protocol.client import Connection

    def expired(signum, frame):
        raise TimeoutError

    if any(c.isspace() for c in login):  # the protocol's words are split on blanks
        raise Refused("bad_chars", f"invalid login {login!r}")
    host, port = split_hostport(remote)
    conn = Connection(host, port, timeout=timeout, tls=tls, ca_file=ca_file, connect_timeout=timeout)
    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)  # one deadline for connect, greeting and reply
    try:
        conn.connect()
        info = conn.login(login, password)
    except LoginFailed:
        raise Refused("bad_password", f"{remote}: login refused for {login}") from None
    except UsageError:  # a CR, LF or NUL in the password, or the daemon's 6.203/7.204
        raise Refused("bad_chars", f"invalid login for {login}") from None
    except TimeoutError:
        raise Refused("temp", f"{remote} did not answer within {timeout:g} s") from None
    except (VcliError, OSError) as exc:
        raise Refused("temp", getattr(exc, "message", None) or f"{remote}: {exc}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if conn.sock is not None:
            conn.sock.close()
    try:
        flags = int(info.get("gidflags", "0"))
    except ValueError:
        raise Refused("temp", f"{remote}: unreadable gidflags {info.get('gidflags')!r}") from None
    if flags & SERVICE_FLAG[svc]:
        raise Refused("flag", f"{svc} access closed for {login}")
    return info


# --- the commands ------------------------------------------------------------------


def _exec(argv: list[str], env: dict, tool: str) -> int:
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        print(f"{tool}: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 111
    return 111  # not reached


def _finish(tool: str, exc: Refused, which: int) -> int:
    print(f"{tool}: {exc.message}", file=sys.stderr, flush=True)
    if exc.kind in CREDENTIAL_FAILURES:
        import time

        time.sleep(fail_delay())
    return CODES[exc.kind][which]


def _user_env(login: str, user: str, home: str) -> dict:
    env = dict(os.environ)
    env.update(USER=user, HOME=home, SHELL="NOLOGIN", VPOPUSER=login)
    return env


def vchkpw_main(argv: list[str]) -> int:
    if not argv:
        print("vchkpw: usage: vchkpw program [args...] (login\\0password\\0 on fd 3)", file=sys.stderr)
        return CODES["usage"][0]
    try:
        login, password = read_request()
        svc = service(argv[0])
        store, vu, real = check_local(login, password, svc)
        env = _user_env(login, vu.name, vu.dir)
        enter_mailbox(store, vu, real, svc, env)
    except Refused as exc:
        return _finish("vchkpw", exc, 0)
    return _exec(argv, env, "vchkpw")


CHECKPASSWORD_OPTIONS = [  # (option, value name, help): read by the parser, the man page and completions
    ("--remote", "HOST[:PORT]", "check the password with a vpopmaild (one clogin) instead of the local store"),
    ("--profile", "NAME", "the vpopmaild of [profiles.NAME] in the config file (its remote, tls, ca_file, timeout)"),
    ("--timeout", "SECONDS", "give up on the vpopmaild after this long, exit 111 (default 5)"),
    ("--tls", "", "talk TLS to the vpopmaild"),
    ("--ca-file", "FILE", "CA bundle for --tls"),
    ("--service", "NAME", "pop, imap, smtp or webmail instead of guessing from TCPLOCALPORT/SERVICE/program"),
]


USAGE = ("usage: vcheckpassword [--remote HOST[:PORT] | --profile NAME] [--timeout S] [--tls] [--ca-file FILE] "
         "[--service pop|imap|smtp|webmail] program [args...]")


def _parse(argv: list[str]) -> tuple[dict, list[str]]:
    """Options up to the program name (the program's own arguments are never ours)."""
    takes = {o: bool(v) for o, v, _ in CHECKPASSWORD_OPTIONS}
    opts: dict = {}
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if arg == "--help":
            raise Refused("help", USAGE)
        name, eq, value = arg.partition("=")
        if name not in takes:
            raise Refused("usage", f"unknown option {name}")
        if takes[name] and not eq:
            if i >= len(argv):
                raise Refused("usage", f"{name} needs a value")
            value = argv[i]
            i += 1
        opts[name[2:]] = value if takes[name] else True
    return opts, argv[i:]


def _remote_settings(opts: dict) -> tuple[str | None, float, bool, str | None]:
    from ..config import config_paths, load_config_file

    remote = opts.get("remote") or os.environ.get("VCLI_REMOTE") or None
    profile = opts.get("profile") or (None if remote else os.environ.get("VCLI_PROFILE")) or None
    prof: dict = {}
    if profile:
        for path in config_paths():
            profiles = load_config_file(path).get("profiles", {})
            if profile in profiles:
                prof = profiles[profile]
                break
        else:
            raise Refused("usage", f"no profile {profile!r} in {' or '.join(config_paths())}")
        remote = remote or prof.get("remote")
        if not remote:
            raise Refused("usage", f"profile {profile!r} has no remote")
    try:
        timeout = float(opts.get("timeout") or prof.get("timeout", 5))
    except ValueError:
        raise Refused("usage", f"--timeout {opts.get('timeout')!r}: seconds expected") from None
    if timeout <= 0:
        raise Refused("usage", "--timeout must be positive")
    return remote, timeout, bool(opts.get("tls") or prof.get("tls", False)), opts.get("ca-file") or prof.get("ca_file")


def checkpassword_main(argv: list[str]) -> int:
    from ..errors import VcliError

    try:
        opts, prog = _parse(argv)
        if not prog:
            raise Refused("usage", USAGE)
        svc = opts.get("service") or service(prog[0])
        if svc not in SERVICE_FLAG:
            raise Refused("usage", f"--service {svc!r}: pop, imap, smtp or webmail")
        try:
            remote, timeout, tls, ca_file = _remote_settings(opts)
            if remote:
                from ..backend import split_hostport

                split_hostport(remote)  # a bad HOST:PORT is misuse, found before fd 3 is read
        except VcliError as exc:  # a bad config file or HOST:PORT
            raise Refused("usage", exc.message) from None
        login, password = read_request()
        if remote:
            info = check_remote(login, password, svc, remote, timeout, tls, ca_file)
            env = _user_env(login, info.get("name") or login.split("@")[0], info.get("user_dir", ""))
        else:
            store, vu, real = check_local(login, password, svc)
            env = _user_env(login, vu.name, vu.dir)
            enter_mailbox(store, vu, real, svc, env)
    except Refused as exc:
        if exc.kind == "help":
            print(exc.message + "\n(login\\0password\\0timestamp\\0 on fd 3; exit 1 refused, 2 misuse, 111 temporary;"
                  " see vcheckpassword(8))")
            return 0
        return _finish("vcheckpassword", exc, 1)
    return _exec(prog, env, "vcheckpassword")


def _entry(fn):
    def main(argv: list[str] | None = None) -> None:
        try:
            os.fstat(3)
        except OSError:
            FD3_OPEN[0] = False
        from .common import guard_std_fds

        guard_std_fds()
        try:
            code = fn(sys.argv[1:] if argv is None else argv)
        except KeyboardInterrupt:
            code = 111
        except Exception as exc:  # noqa: BLE001 - never a traceback, never "bad password" for a bug
            print(f"{fn.__name__.split('_')[0]}: internal error: {type(exc).__name__}", file=sys.stderr)
            if os.environ.get("VCLI_DEBUG"):
                raise
            code = 111
        sys.exit(code)

    return main


vchkpw = _entry(vchkpw_main)
vcheckpassword = _entry(checkpassword_main)
