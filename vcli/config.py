"""Where the store is and how this site's vpopmail was built.

Precedence for every setting: command-line option > environment variable >
config file > what the site's vpopmail was built with (`include/vpopmail_config.h`
under the vpopmail dir, see vcli/site.py) > what the machine says (the `vpopmail`
user's home) > the embedded default store in the user data dir.  Build choices
no header decides default to sagredo vpopmail 5.6's.  `Settings.sources` says where
each value came from (`vcli config show`).
"""

from __future__ import annotations

import os
import sys

from .errors import ConfigError
from .record import factory, record

APP = "vcli"

# config key -> (environment variable, type)
_SETTINGS_ENV = {
    "vpopmail_dir": ("VPOPMAIL_DIR", str),
    "qmail_dir": ("QMAIL_DIR", str),
    "clear_passwords": ("VCLI_CLEAR_PASSWORDS", bool),
    "hash": ("VCLI_HASH", str),
    "qmail_default": ("VCLI_QMAIL_DEFAULT", str),
    "max_user": ("VCLI_MAX_USER", int),
    "max_gecos": ("VCLI_MAX_GECOS", int),
    "random_length": ("VCLI_RANDOM_LENGTH", int),
    "lock_wait": ("VCLI_LOCK_WAIT", float),
    "vpopmail_uid": ("VCLI_VPOPMAIL_UID", int),
    "vpopmail_gid": ("VCLI_VPOPMAIL_GID", int),
    # the site's build (vpopmail_config.h decides them when present)
    "auth_module": ("VCLI_AUTH_MODULE", str),
    "many_domains": ("VCLI_MANY_DOMAINS", bool),
    "sql_aliasdomains": ("VCLI_SQL_ALIASDOMAINS", bool),
    "mysql_limits": ("VCLI_MYSQL_LIMITS", bool),
    "valias": ("VCLI_VALIAS", bool),
    "auth_logging": ("VCLI_AUTH_LOGGING", bool),
    "ip_alias_domains": ("VCLI_IP_ALIAS_DOMAINS", bool),
    "mysql_replication": ("VCLI_MYSQL_REPLICATION", bool),
    "db_file": ("VCLI_DB_FILE", str),  # the SQL connection file, when not etc/vpopmail.mysql|pgsql
}
AUTH_MODULES = ("cdb", "mysql", "pgsql")
# the keys of a [profiles.NAME] table (vcli.backend reads them)
PROFILE_KEYS = ("remote", "login", "password", "tls", "ca_file", "allow_plain", "timeout", "clear_passwords")


@record
class Settings:
    vpopmail_dir: str = ""
    qmail_dir: str = "/var/qmail"
    clear_passwords: bool = False  # --enable-clear-passwd
    hash: str = "sha512"  # sha512 | md5 | des
    qmail_default: str = "delete"  # vdelivermail action of new domains (DerDakon: bounce-no-mailbox)
    max_user: int = 64
    max_gecos: int = 64
    random_length: int = 12
    lock_wait: float | None = None  # seconds; None = vpopmail's 20 s
    vpopmail_uid: int | None = None
    vpopmail_gid: int | None = None
    auth_module: str = "cdb"  # --enable-auth-module: cdb | mysql | pgsql (| ldap ... : unsupported)
    many_domains: bool = True  # MANY_DOMAINS: one `vpopmail` table, not one per domain
    sql_aliasdomains: bool = False  # SQL_ALIASDOMAINS: the aliasdomains table
    mysql_limits: bool = False  # ENABLE_MYSQL_LIMITS: the limits table
    valias: bool = False  # VALIAS: aliases in the valias table
    auth_logging: bool = True  # ENABLE_AUTH_LOGGING: lastauth
    ip_alias_domains: bool = False  # IP_ALIAS_DOMAINS: ip_alias_map
    mysql_replication: bool = False  # MYSQL_REPLICATION: reads from line 1 of vpopmail.mysql
    db_file: str | None = None  # vpopmail.mysql/pgsql elsewhere (`vcli convert --db-file` records it)
    built_vpopmail_dir: str | None = None  # VPOPMAILDIR of the header (information only)
    site_file: str | None = None  # the vpopmail_config.h read, if any
    embedded: bool = False
    config_file: str | None = None
    profiles: dict = factory(dict)
    sources: dict = factory(dict)  # setting -> where its value came from
    db: object = None  # vcli.site.DbSettings of an SQL site, when asked for (load_settings(read_db=True))

    def as_dict(self) -> dict:
        out = {n: getattr(self, n) for n in self._fields}
        out["db"] = self.db.shown() if self.db is not None else None
        return out


def config_paths() -> list[str]:
    """Config files in the order they are tried: VCLI_CONFIG, then root's or the user's."""
    env = os.environ.get("VCLI_CONFIG")
    if env:
        return [env]
    paths = []
    if os.geteuid() == 0:
        paths.append("/etc/vcli/config.toml")
    paths.append(os.path.join(user_config_dir(), "config.toml"))
    return paths


def user_config_dir() -> str:
    """platformdirs' user config dir; on Linux its XDG rule is applied without importing it,
    because every classic command looks here and platformdirs costs ~10 ms of start-up."""
    if sys.platform.startswith("linux"):
        base = os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.expanduser("~/.config")
        return os.path.join(base, APP)
    from platformdirs import user_config_dir as ucd

    return ucd(APP)


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not a boolean: {text!r}")


def _coerce(name: str, value, typ):
    try:
        if typ is bool:
            return value if isinstance(value, bool) else _parse_bool(str(value))
        return typ(value)
    except (TypeError, ValueError):
        raise ConfigError(f"bad value for {name}: {value!r}") from None


def load_config_file(path: str, required: bool = False) -> dict:
    """The TOML file at `path` ({} when missing, unless `required`), its keys checked: a misspelt
    key must not silently leave the setting to the machine's default (another store)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; tomllib only imported when a file exists
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such config file (named by VCLI_CONFIG)") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        with f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    config = _flat(data)
    if config is None:
        import tomllib

        try:
            config = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    check_keys(path, config)
    return config


def _flat(data: bytes) -> dict | None:
    """A config file of plain `key = "text"` / `key = true` / `key = 12` lines and comments
    (what `vcli convert` writes) read without tomllib, whose import (with re) costs the lookup
    commands ~7 ms; None for anything else (tables, escapes, arrays...): tomllib reads it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out: dict = {}
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not (key.isascii() and key.replace("_", "a").replace("-", "a").isalnum()) or key in out:
            return None
        if value.startswith('"'):
            end = value.find('"', 1)
            rest = value[end + 1:].strip() if end > 0 else "x"
            body = value[1:end]
            if end < 0 or "\\" in body or (rest and not rest.startswith("#")) or not body.isprintable():
                return None
            out[key] = body
            continue
        value = value.split("#", 1)[0].strip()
        if value in ("true", "false"):
            out[key] = value == "true"
        elif value.lstrip("-").isdigit() and value.isascii() and not value.lstrip("-").startswith("0") or value == "0":
            out[key] = int(value)
        else:
            return None
    return out


def check_keys(path: str, config: dict) -> None:
    """Every key known: settings at top level or in [store], PROFILE_KEYS in [profiles.NAME]."""

    def unknown(where: str, table, known) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {where} must be a table")
        for key in table:
            if key not in known:
                raise ConfigError(f"{path}: unknown key {where + '.' if where else ''}{key} "
                                  f"(known: {', '.join(k for k in known if k not in ('store', 'profiles'))})")

    unknown("", config, (*_SETTINGS_ENV, "store", "profiles"))
    if "store" in config:
        unknown("store", config["store"], tuple(_SETTINGS_ENV))
    for name, prof in (config.get("profiles") or {}).items():
        unknown(f"profiles.{name}", prof, PROFILE_KEYS)


def _vpopmail_home() -> str | None:
    try:
        import pwd

        home = pwd.getpwnam("vpopmail").pw_dir
    except (KeyError, ImportError):
        return None
    return home if home and os.path.isdir(home) else None


def _ids() -> tuple[int | None, int | None]:
    """uid/gid of the vpopmail user and vchkpw group, when the machine has them."""
    uid = gid = None
    try:
        import grp
        import pwd

        uid = pwd.getpwnam("vpopmail").pw_uid
        gid = grp.getgrnam("vchkpw").gr_gid
    except (KeyError, ImportError):
        pass
    return uid, gid


def embedded_root() -> str:
    from platformdirs import user_data_dir

    return os.path.join(user_data_dir(APP), "store")


def ensure_embedded(root: str, announce) -> None:
    """Create the embedded store the first time: a vpopmail and a qmail tree."""
    marker = os.path.join(root, "vpopmail", "etc", "vlimits.default")
    if os.path.exists(marker):
        return
    for d in ("vpopmail/etc", "vpopmail/bin", "vpopmail/domains", "qmail/users", "qmail/control"):
        os.makedirs(os.path.join(root, d), mode=0o700, exist_ok=True)
    from importlib import resources

    for name in ("password_strength.conf", "vlimits.default"):
        data = resources.files("vcli").joinpath("data", name).read_bytes()
        path = os.path.join(root, "vpopmail", "etc", name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    assign = os.path.join(root, "qmail", "users", "assign")
    if not os.path.exists(assign):
        with open(assign, "wb") as f:
            f.write(b".\n")
    announce(f"vcli: no vpopmail installation found; using the embedded store in {root}")


def load_settings(overrides: dict | None = None, announce=None, read_db: bool = False) -> Settings:
    """Resolve the settings from options, environment, config file, the site's build and machine.

    `read_db`: also parse the SQL site's vpopmail.mysql/pgsql into `Settings.db` (the SQL
    modules and `vcli config show` do; a cdb command never reads it)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if announce is None:

        def announce(msg):
            print(msg, file=sys.stderr)

    config: dict = {}
    config_file = None
    for path in config_paths():
        config = load_config_file(path, required=bool(os.environ.get("VCLI_CONFIG")))
        if config:
            config_file = path
            break
    store_section = config.get("store", config)
    s = Settings(config_file=config_file, profiles=config.get("profiles", {}) or {})
    src = s.sources
    for name, (env, typ) in _SETTINGS_ENV.items():
        if name in overrides:
            value, src[name] = overrides[name], "option"
        elif os.environ.get(env) not in (None, ""):
            value, src[name] = os.environ[env], f"env {env}"
        elif name in store_section:
            value, src[name] = store_section[name], config_file
        else:
            continue
        setattr(s, name, _coerce(name, value, typ))
    if not s.vpopmail_dir:
        home = _vpopmail_home()
        if home:
            s.vpopmail_dir, src["vpopmail_dir"] = home, "the vpopmail user's home"
        else:
            root = embedded_root()
            ensure_embedded(root, announce)
            s.vpopmail_dir, src["vpopmail_dir"] = os.path.join(root, "vpopmail"), "embedded store"
            if "qmail_dir" not in src:
                s.qmail_dir, src["qmail_dir"] = os.path.join(root, "qmail"), "embedded store"
            s.embedded = True
    from .site import read_site

    site, s.site_file = read_site(s.vpopmail_dir)
    for name, value in site.items():
        if name not in src:
            setattr(s, name, value)
            src[name] = s.site_file
    if s.hash not in ("sha512", "md5", "des"):
        raise ConfigError(f"unknown hash scheme {s.hash!r} (sha512, md5 or des)")
    if s.auth_module not in AUTH_MODULES and src.get("auth_module") != s.site_file:  # a header may name ldap
        raise ConfigError(f"unknown auth module {s.auth_module!r} ({', '.join(AUTH_MODULES)})")
    if s.vpopmail_uid is None or s.vpopmail_gid is None:
        uid, gid = _ids()
        machine = "the machine"
        if s.embedded or uid is None:
            uid, gid, machine = os.getuid(), os.getgid(), "this process"
        for name, value, who in (("vpopmail_uid", uid, "user"), ("vpopmail_gid", gid, "group")):
            if getattr(s, name) is None:
                setattr(s, name, value)
                src[name] = machine if machine == "this process" else f"the {'vpopmail' if who == 'user' else 'vchkpw'} {who}"
    for name in (*_SETTINGS_ENV, "built_vpopmail_dir"):
        src.setdefault(name, "default")
    if read_db and s.auth_module in ("mysql", "pgsql"):
        from .site import read_db_file

        s.db = read_db_file(s.vpopmail_dir, s.auth_module, announce, path=s.db_file)
        src["db"] = s.db.path
    return s
