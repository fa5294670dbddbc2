"""One exception hierarchy for the store, the CLI, the daemon and the client.

Errors that vpopmail itself has carry vpopmail's negative error code (``code``) and
its exact text, so the classic commands can print the same words and the daemon
can send the same ``-ERR 0.<minor> <text>`` line.  Each class carries its exit
status; the CLI layer is the only place that turns one into ``sys.exit``.
"""

from __future__ import annotations

# vpopmail's verror() texts (spec/tools.md §0), keyed by the negative code.
VERROR_TEXT: dict[int, str] = {
    -1: "Illegal username",
    -2: "Username exists",
    -3: "Unable to chdir to vpopmail directory",
    -4: "Unable to chdir to vpopmail/users directory",
    -5: "Unable to chdir to vpopmail/domains directory",
    -6: "Unable to chdir to vpopmail/domains/domain directory",
    -7: "User's directory already exists",
    -8: "Unable to chdir to user's directory",
    -9: "Creation of user's subdirectories failed",
    -10: "User does not exist",
    -11: "Domain does not exist",
    -12: "Invalid domain name",
    -13: "Domain already exists",
    -14: "Could not make domain dir",
    -15: "Could not open qmail default",
    -16: "Can not make domains directory",
    -17: "Could not update file",
    -18: "Crypt failed",
    -19: "Could not open dot qmail file",
    -20: "bad character",
    -22: "running as invalid uid",
    -23: "no authentication database connection",
    -24: "memory allocation error",
    -25: "user name too long (max=64)",
    -26: "domain name too long (max=96)",
    -27: "password too long (max=128)",
    -28: "gecos too long (max=64)",
    -29: "quota too long (max=20)",
    -30: "dir too long (max=160)",
    -31: "clear password too long (max=128)",
    -32: "alias line too long (max=160)",
    -33: "null pointer",
    -34: "invalid email character",
    -36: "can't read domain limits",
    -37: "can't read users/assign file",
    -55: "can't delete catchall account",
}

# Exit statuses of our own that vpopmail has no code for (sysexits.h values).
EXIT_USAGE = 64  # EX_USAGE: bad command line (classic tools keep vpopmail's own)
EXIT_DATAERR = 65  # EX_DATAERR: a corrupt store file that could not be repaired
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: remote daemon refused / unreachable
EXIT_SOFTWARE = 70  # EX_SOFTWARE: internal error (a bug)
EXIT_IOERR = 74  # EX_IOERR: disk full, read-only file system, I/O error
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: store lock busy
EXIT_PROTOCOL = 76  # EX_PROTOCOL: the daemon answered something we do not understand
EXIT_NOPERM = 77  # EX_NOPERM: login failed or not authorised
EXIT_CONFIG = 78  # EX_CONFIG: bad configuration file


class VcliError(Exception):
    """Base class: a one-line message and an exit status."""

    exit_code = 1
    code: int | None = None  # vpopmail error code, when vpopmail has one

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message())

    @property
    def message(self) -> str:
        return str(self.args[0])

    def default_message(self) -> str:
        return type(self).__name__


class VpopError(VcliError):
    """An error vpopmail reports with verror(code); exit status 256 + code."""

    _by_code: dict[int, type[VpopError]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.code is not None:
            VpopError._by_code[cls.code] = cls

    def __init__(self, message: str | None = None, code: int | None = None):
        if code is not None:
            self.code = code
        super().__init__(message)

    def default_message(self) -> str:
        return VERROR_TEXT.get(self.code, "Unknown error")

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return (256 + self.code) & 0xFF if self.code else 1

    @classmethod
    def for_code(cls, code: int, message: str | None = None) -> VpopError:
        return cls._by_code.get(code, VpopError)(message, code)


class IllegalUsername(VpopError):
    code = -1


class UserExists(VpopError):
    code = -2


class StoreMissing(VpopError):
    code = -3


class DomainsDirMissing(VpopError):
    code = -5


class UserDirExists(VpopError):
    code = -7


class UserNotFound(VpopError):
    code = -10


class DomainNotFound(VpopError):
    code = -11


class InvalidDomain(VpopError):
    code = -12


class DomainExists(VpopError):
    code = -13


class UpdateFailed(VpopError):
    code = -17


class BadCharacter(VpopError):
    code = -20


class TooLong(VpopError):
    """One of the "... too long (max=N)" errors; the code says which field."""


class LimitsUnreadable(VpopError):
    code = -36


class AssignUnreadable(VpopError):
    code = -37


class CatchallProtected(VpopError):
    code = -55


class WeakPassword(VpopError):
    """Password-strength policy refusal (codes -69 .. -74)."""

    def __init__(self, message: str, code: int = -70, policy: str | None = None):
        self.policy = policy
        super().__init__(message, code)


class PasswordChangeDenied(VcliError):
    """NO_PASSWD_CHNG is in the user's effective flags (vpasswd says Illegal username)."""

    exit_code = 255

    def default_message(self) -> str:
        return "password changing is disabled for this user"


class IpAliasDomainsOff(VcliError):
    """The site's vpopmail was built without IP_ALIAS_DOMAINS: no ip map to show or change."""

    exit_code = 255

    def default_message(self) -> str:
        return ("this vpopmail build has no ip alias domains (IP_ALIAS_DOMAINS); "
                "set ip_alias_domains (VCLI_IP_ALIAS_DOMAINS=1) if the site has them")


class IpMapNotFound(VcliError):
    """vipmap -d of a mapping that is not in etc/ip_alias_map."""

    exit_code = 255


class UsageError(VcliError):
    exit_code = EXIT_USAGE


class AliasExists(VcliError):
    exit_code = 255


class AliasNotFound(VcliError):
    exit_code = 255


class CorruptStore(VcliError):
    exit_code = EXIT_DATAERR


class VerifyFailed(VcliError):
    """vcli convert: the target's records differ from the source's after the copy (nothing switched)."""

    exit_code = EXIT_DATAERR


class StoreIOError(VcliError):
    exit_code = EXIT_IOERR


class LockBusy(VcliError):
    exit_code = EXIT_TEMPFAIL

    def default_message(self) -> str:
        return "File busy try again later!"


class ConfigError(VcliError):
    exit_code = EXIT_CONFIG


class AuthModuleUnavailable(ConfigError):
    """The site's vpopmail was built with an auth module this vcli does not have (yet): refuse
    rather than read a cdb store that is not the site's user database."""


class DatabaseError(VcliError):
    """The SQL server of an SQL site failed a statement: nothing of the change was kept (the
    transaction rolled back, the trees made for it removed)."""

    exit_code = EXIT_UNAVAILABLE


class DatabaseUnavailable(DatabaseError):
    """The SQL server cannot be reached (down, wrong host/port, connection lost): the message
    names it as host:port (or the socket path)."""


class DatabaseDenied(DatabaseError):
    """The SQL server refused the login, or the right on a table."""

    exit_code = EXIT_NOPERM


class NotAuthorized(VcliError):
    exit_code = EXIT_NOPERM


class LoginFailed(VcliError):
    exit_code = EXIT_NOPERM


class RemoteUnavailable(VcliError):
    exit_code = EXIT_UNAVAILABLE


class ProtocolError(VcliError):
    exit_code = EXIT_PROTOCOL
