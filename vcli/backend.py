"""The one place that decides which backend a command works on.

Local: the store on this machine (`vcli.store.store.Store`).  Remote: the same
operations over the vpopmaild protocol (`vcli.protocol.remote.RemoteBackend`),
chosen by `--remote HOST[:PORT]`, `VCLI_REMOTE`, or a profile of the config file
(`--profile NAME` / `VCLI_PROFILE`).  Commands never build a backend themselves.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable

_LOOPBACK = ("127.", "::1", "localhost")


def open_backend(vpopmail_dir: str | None = None, qmail_dir: str | None = None, wait: float | None = None,
                 warn: Callable[[str], None] | None = None, announce: Callable[[str], None] | None = None,
                 remote: str | None = None, profile: str | None = None, login: str | None = None,
                 password_file: str | None = None, tls: bool | None = None, ca_file: str | None = None):
    from .config import load_settings

    remote = remote or os.environ.get("VCLI_REMOTE") or None
    profile = profile or os.environ.get("VCLI_PROFILE") or None
    if remote or profile:
        return _open_remote(remote, profile, login, password_file, tls, ca_file, warn or (lambda m: None))
    from .store.store import Store

    settings = load_settings({"vpopmail_dir": vpopmail_dir, "qmail_dir": qmail_dir}, announce=announce or warn)
    if not os.path.isdir(settings.vpopmail_dir):  # every command, not only those that write under it
        from .errors import StoreMissing

        raise StoreMissing(f"Unable to chdir to vpopmail directory: {settings.vpopmail_dir}")
    return Store(settings, warn=warn, lock_wait=wait)


def _open_remote(remote, profile_name, login, password_file, tls, ca_file, warn):
    from .config import config_paths, load_config_file
    from .errors import ConfigError, UsageError
    from .protocol.remote import RemoteBackend

    prof: dict = {}
    source = None
    if profile_name:
        for path in config_paths():
            profiles = load_config_file(path).get("profiles", {})
            if profile_name in profiles:
                prof, source = profiles[profile_name], path
                break
        else:
            raise ConfigError(f"no profile {profile_name!r} in {' or '.join(config_paths())}")
    remote = remote or prof.get("remote")
    if not remote:
        raise ConfigError(f"profile {profile_name!r} has no 'remote = \"host:port\"'")
    login = login or os.environ.get("VCLI_LOGIN") or prof.get("login")
    if not login:
        raise UsageError("--login EMAIL (or VCLI_LOGIN, or the profile's login) is required with a remote backend")
    host, port = split_hostport(remote)
    tls = bool(prof.get("tls", False)) if tls is None else tls
    ca_file = ca_file or prof.get("ca_file")
    if not tls and not host.startswith(_LOOPBACK) and not prof.get("allow_plain", False):
        warn(f"Warning: the password for {login} goes to {host} unencrypted (use --tls)")
    password = _password(password_file, prof, source, login)
    backend = RemoteBackend(host, port, login, password, tls=tls, ca_file=ca_file, warn=warn,
                            timeout=float(prof.get("timeout", 30)))
    backend.s.clear_passwords = bool(prof.get("clear_passwords", False))  # the server's build
    return backend


def split_hostport(text: str, default_port: int = 89) -> tuple[str, int]:
    """'host', 'host:port', '[::1]:port' or '::1' -> (host, port); the default port is the real
    vpopmaild's (89), not our daemon's unprivileged default (8900), see README."""
    from .errors import UsageError

    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise UsageError(f"no host in {text!r} (HOST[:PORT])")
    if not port:
        return host, default_port
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise UsageError(f"bad port in {text!r}: a number from 1 to 65535")
    return host, int(port)


def _password(password_file, prof: dict, source: str | None, login: str) -> str:
    """--password-file, VCLI_PASSWORD, the profile (0600 file only), else a prompt on a terminal."""
    from .errors import ConfigError, UsageError

    if password_file:
        from .cli.common import read_secret_file

        return read_secret_file(password_file)
    if os.environ.get("VCLI_PASSWORD"):
        return os.environ["VCLI_PASSWORD"]
    if "password" in prof:
        mode = stat.S_IMODE(os.stat(source).st_mode)
        if mode & 0o077:
            raise ConfigError(f"{source} holds a password but is readable by others (mode {mode:04o}); "
                              f"chmod 600 {source}")
        return str(prof["password"])
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"Password for {login}: ")
    raise UsageError(f"no password for {login}: use --password-file, VCLI_PASSWORD or the profile")
