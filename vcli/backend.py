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
from _collections_abc import (  # collections.abc without the collections package (start-up)
    Callable,
    Iterable,
    Iterator,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .model import AssignEntry, DomainInfo, Limits, NewUser, UserChanges, UserUsage, VUser
else:
    Protocol = object  # `typing` imports re: the lookup commands start without it (issue 11 item 4)


class Backend(Protocol):
    """What every command (CLI, classic tools, the daemon) may call on a backend.

    Satisfied by the local `vcli.store.store.Store` and by `vcli.protocol.remote.RemoteBackend`
    (tests/test_i13_layout.py checks names and parameters of both against this class).  Errors
    are `vcli.errors.VcliError` subclasses; nothing here prints or exits.  `s` is the Settings
    the backend works with (clear_passwords, max_user, ...).
    """

    s: Any

    # names and domains
    def default_domain(self) -> str: ...
    def parse_address(self, address: str) -> tuple[str, str]: ...
    def find_domain(self, domain: str) -> AssignEntry | None: ...
    def domain(self, domain: str) -> AssignEntry: ...
    def real_entry(self, domain: str) -> AssignEntry: ...
    def list_domains(self) -> list[AssignEntry]: ...
    def aliases_of(self, real: str) -> list[str]: ...
    def domain_info(self, domain: str) -> DomainInfo: ...
    def user_counter(self, entry: AssignEntry) -> int: ...
    def add_domain(self, domain: str, password: str | None = None, *, hashed: str | None = None,
                   quota_text: str | None = None, catchall: str | None = None, uid: int | None = None,
                   gid: int | None = None, base_dir: str | None = None, optimize: bool = False,
                   postmaster_gecos: str = "Postmaster") -> AssignEntry: ...
    def add_alias_domain(self, real: str, alias: str) -> AssignEntry: ...
    def del_domain(self, domain: str, force: bool = True,
                   progress: Callable[[int], None] | None = None) -> list[str]: ...
    def limits(self, domain: str | None) -> Limits: ...
    def domain_mask(self, domain: str) -> int | None: ...

    # users
    def get_user(self, user: str, domain: str) -> VUser: ...
    def find_user(self, user: str, domain: str) -> VUser | None: ...
    def list_users(self, domain: str) -> Iterator[VUser]: ...
    def user_usage(self, user: VUser) -> UserUsage: ...
    def lastauth(self, user: VUser, domain: str | None = None) -> tuple[float, str] | None: ...
    def effective_flags(self, user: VUser, domain: str, mask: int | None = None) -> int: ...
    def prepare_user(self, domain: str, new: NewUser, policy=None) -> NewUser: ...
    def add_user(self, domain: str, new: NewUser) -> VUser: ...
    def add_users(self, domain: str, new_users: Iterable[NewUser], prepared: bool = False,
                  exist_ok: bool = False, progress: Callable[[int], None] | None = None) -> list[VUser]: ...
    def mod_user(self, user: str, domain: str, ch: UserChanges, rebuild_cdb: bool = True,
                 enforce_no_passwd_chng: bool = False) -> VUser: ...
    def mod_users(self, domain: str, ch: UserChanges, users: list[str] | None = None, rebuild_cdb: bool = True,
                  enforce_no_passwd_chng: bool = False) -> list[VUser]: ...
    def set_quota(self, user: str, domain: str, quota_text: str) -> VUser: ...
    def set_password(self, user: str, domain: str, clear: str, check_policy: bool = True,
                     enforce_no_passwd_chng: bool = True) -> VUser: ...
    def del_user(self, user: str, domain: str) -> VUser: ...

    # .qmail aliases
    def alias_names(self, domain: str) -> list[str]: ...
    def alias_lines(self, domain: str, alias: str) -> list[str] | None: ...
    def list_aliases(self, domain: str) -> list[tuple[str, list[str]]]: ...
    def add_alias_line(self, domain: str, alias: str, line: str, allow_duplicate: bool = False) -> None: ...
    def remove_alias_line(self, domain: str, alias: str, prefix: str) -> None: ...
    def delete_alias(self, domain: str, alias: str) -> None: ...

    # the end of a command: its connections closed now (a server sees a goodbye), not at exit
    def close(self) -> None: ...


class LocalBackend(Backend, Protocol):
    """What only a store on this machine offers (the daemon serves these; a remote client has no
    way to ask for them except through a daemon): writing limits, the catch-all, the root."""

    @property
    def root(self) -> str: ...
    def set_limits(self, domain: str | None, lim: Limits) -> None: ...
    def del_limits(self, domain: str) -> None: ...
    def set_catchall(self, domain: str, catchall: str | None, action: str | None = None) -> None: ...

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
        from .secretfile import read_secret_file

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
