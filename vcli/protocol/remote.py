"""RemoteBackend: the store's interface, carried out over the vpopmaild protocol.

It offers the methods the commands use on the local Store (find_domain,
get_user, add_users, mod_user, …) and returns the same record types, so a
command prints the same text and exits with the same code either way.  It relies
only on what the real C vpopmaild sends.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .. import flags as F
from .. import model
from ..backend_common import BackendCommon
from ..errors import (
    DomainExists,
    DomainNotFound,
    IpAliasDomainsOff,
    IpMapNotFound,
    LoginFailed,
    NotAuthorized,
    PasswordChangeDenied,
    RemoteUnavailable,
    UsageError,
    UserExists,
    UserNotFound,
    VpopError,
)
from ..model import AssignEntry, Limits, VUser
from ..store import names
from ..store.ipmap import check_ip
from .client import Connection, RemoteError, pairs, user_blocks


@dataclass
class RemoteSettings:
    """What the commands read from Store.s, as far as a remote store can tell."""

    clear_passwords: bool = False  # as the default build; a profile can say the server stores clear text
    hash: str = "sha512"
    max_user: int = 64
    max_gecos: int = 64
    vpopmail_dir: str = ""


class RemoteBackend(BackendCommon):
    is_remote = True  # commands that only work on a local store (check) say so

    def __init__(self, host: str, port: int, login: str, password: str, *, tls: bool = False,
                 ca_file: str | None = None, timeout: float = 30.0, warn=None):
        self.warn = warn or (lambda m: None)
        self.conn = Connection(host, port, timeout=timeout, tls=tls, ca_file=ca_file)
        self._login, self._password = login, password
        self.conn.connect()
        info = self.conn.login(login, password)
        self.s = RemoteSettings(vpopmail_dir=info.get("vpopmail_dir", ""))
        self.root = self.s.vpopmail_dir
        self.login_domain = login.rpartition("@")[2].lower()
        self.login_gid = int(info.get("gidflags", "0") or 0)
        # a plain user (level 1) may not run user_info: his own record is the login reply's
        self.plain_user = not self.login_gid & (F.QA_ADMIN | F.SA_ADMIN)

    def close(self) -> None:
        self.conn.close()

    def _read(self, fn):
        """Run an idempotent read; on a broken connection reconnect once and retry."""
        try:
            return fn()
        except RemoteUnavailable:
            self._relogin()
            return fn()

    def _relogin(self, password: str | None = None) -> None:
        self.conn.close()
        self.conn.connect()
        self.conn.login(self._login, self._password if password is None else password)

    def _is_login(self, user: str, domain: str) -> bool:
        info = self.conn.login_info
        return (user.lower(), domain.lower()) == (info.get("name", ""), self.login_domain)

    # --- names --------------------------------------------------------------------

    def default_domain(self) -> str:
        return names.default_domain(None)

    def parse_address(self, address: str) -> tuple[str, str]:
        return model.parse_address(address, self.default_domain(), self.s.max_user)

    # --- domains ------------------------------------------------------------------

    def find_domain(self, domain: str) -> AssignEntry | None:
        domain = domain.lower()
        if not domain:
            return None
        try:
            data = pairs_multi(self._read(lambda: self.conn.multi(f"dom_info {domain}")))
        except DomainNotFound:
            return None
        except NotAuthorized:
            # a domain admin cannot run dom_info: it knows its own domain from the login reply
            info = self.conn.login_info
            if domain == self.login_domain:
                return AssignEntry(domain, domain, int(info.get("uid", 0)), int(info.get("gid", 0)),
                                   info.get("domain_dir", ""))
            raise
        except VpopError as exc:
            if exc.code == -11:
                return None
            raise
        real = data["domain"][0]
        return AssignEntry(domain, real, int(data["uid"][0]), int(data["gid"][0]), data["path"][0])

    def list_domains(self) -> list[AssignEntry]:
        lines = self._read(lambda: self.conn.multi("list_domains"))
        out, cache = [], {}
        for line in lines:
            real, _, name = line.partition(" ")
            if real not in cache:
                cache[real] = self.real_entry(real)
            r = cache[real]
            out.append(AssignEntry(name, real, r.uid, r.gid, r.dir))
        return out

    def aliases_of(self, real: str) -> list[str]:
        data = pairs_multi(self._read(lambda: self.conn.multi(f"dom_info {real}")))
        return data.get("alias", [])

    def user_counter(self, entry: AssignEntry) -> int:
        data = pairs(self._read(lambda: self.conn.multi(f"user_count {entry.real}")))
        return int(data.get("count", "0") or 0)

    def domain_info(self, domain: str):
        from ..model import DomainInfo

        entry = self.domain(domain)
        return DomainInfo(entry, self.user_counter(entry), self.aliases_of(entry.real))

    def add_domain(self, domain: str, password: str | None = None, *, hashed=None, quota_text=None, catchall=None,
                   uid=None, gid=None, base_dir=None, optimize=False, postmaster_gecos="Postmaster"):
        for what, value in (("-e catchall", catchall), ("-u/-i/-g owner", uid if uid is not None else gid),
                            ("-d base dir", base_dir), ("-e hash", hashed)):
            if value is not None:
                raise UsageError(f"{what} is not available over vpopmaild")
        model.check_new_domain(domain)
        if self.find_domain(domain):
            raise DomainExists()
        if not password:
            raise UsageError("a postmaster password is required over vpopmaild")
        self.conn.simple(f"add_domain {domain.lower()} {password}")
        opts = [("comment", postmaster_gecos)]
        if quota_text is not None:
            opts.append(("quota", quota_text))
        self.conn.mod_user(f"postmaster@{domain.lower()}", opts)
        return self.domain(domain)

    def add_alias_domain(self, real: str, alias: str):
        model.check_domain_chars(alias.lower())
        self.conn.simple(f"add_alias_domain {real.lower()} {alias.lower()}")
        return self.domain(alias)

    def del_domain(self, domain: str, force: bool = True, progress=None) -> list[str]:
        """progress: accepted as the local store's is; one del_domain command has no steps to show."""
        entry = self.domain(domain)
        aliases = [] if entry.is_alias else self.aliases_of(entry.real)
        if aliases and not force:
            return aliases
        self.conn.simple(f"del_domain {domain.lower()}")
        return aliases

    # --- limits -------------------------------------------------------------------

    def limits(self, domain: str | None) -> Limits:
        if domain is None:
            raise UsageError("the default limits file is not reachable over vpopmaild")
        lines = self._read(lambda: self.conn.multi(f"get_limits {domain.lower()}"))
        lim = Limits()
        for key, value in pairs(lines).items():
            attr = {"max_popaccounts": "maxpopaccounts", "max_aliases": "maxaliases",
                    "max_forwards": "maxforwards", "max_autoresponders": "maxautoresponders",
                    "max_mailinglists": "maxmailinglists", "disk_quota": "quota",
                    "max_msgcount": "maxmsgcount"}.get(key, key)
            if hasattr(lim, attr):
                current = getattr(lim, attr)
                setattr(lim, attr, bool(int(value)) if isinstance(current, bool) else int(value))
        return lim

    def set_limits(self, domain: str | None, lim: Limits) -> None:
        """set_limits: every field sent, so the daemon's file ends as the local writer's (store.md §8)."""
        if domain is None:
            raise UsageError("the default limits file is not reachable over vpopmaild")
        from ..daemon.wire import SET_LIMIT_NAMES

        values = {name: getattr(lim, attr) for name, attr in SET_LIMIT_NAMES.items()}
        values["perm_quota"] = lim.perm_quota & 7  # taken literally by set_limits; the list bits go apart
        self.conn.block(f"set_limits {domain.lower()}", [f"{k} {int(v)}" for k, v in values.items()])

    def del_limits(self, domain: str) -> None:
        self.conn.simple(f"del_limits {domain.lower()}")

    def domain_mask(self, domain: str) -> int | None:
        try:
            return self.limits(domain).flag_mask()
        except (NotAuthorized, DomainNotFound, UsageError):
            return None

    # --- users --------------------------------------------------------------------

    def get_user(self, user: str, domain: str) -> VUser:
        address = f"{user.lower()}@{domain.lower()}"
        if self.plain_user:
            if self._is_login(user, domain):
                return _vuser(self.conn.login_info)
            raise NotAuthorized(f"not authorized: a plain user sees only his own account, not {address}")
        return _vuser(pairs(self._read(lambda: self.conn.multi(f"user_info {address}"))))

    def list_users(self, domain: str):
        entry = self.real_entry(domain)
        for block in user_blocks(self._read(lambda: self.conn.multi(f"list_users {entry.real}"))):
            yield _vuser(block, listing=True)

    def user_usage(self, user: VUser):
        from ..model import UserUsage
        from ..store import quota

        if user.quota == "NOQUOTA":
            return UserUsage(0, 0, None)
        domain = user.dir.rstrip("/").split("/")
        address = f"{user.name}@{self._domain_of(user)}" if domain else user.name
        try:
            data = pairs(self._read(lambda: self.conn.multi(f"get_user_size {address}")))
            size, count = int(data.get("size", 0)), int(data.get("count", 0))
        except (NotAuthorized, UserNotFound):
            size = count = 0
        return UserUsage(size, count, quota.percent(user.quota, size, count))

    def _domain_of(self, user: VUser) -> str:
        return getattr(user, "_domain", "") or self.login_domain

    def lastauth(self, user: VUser, domain: str | None = None):
        try:
            data = pairs(self._read(lambda: self.conn.multi(f"get_lastauth {user.name}@{domain or self._domain_of(user)}")))
        except NotAuthorized:
            return None
        t = int(data.get("time", "0") or 0)
        ip = data.get("ip")
        if not t or ip in (None, "(null)"):
            return None
        return float(t), ip

    def prepare_user(self, domain: str, new, policy=None):
        from ..model import NewUser

        user = model.check_new_user(new.user.lower(), self.s.max_user)
        gecos = user if new.gecos is None else new.gecos
        if ":" in gecos or any(c in gecos for c in "\0\r\n"):
            raise VpopError(code=-20)
        return NewUser(user, new.password, new.hashed, gecos, new.quota, new.apop)

    PIPELINE = 32  # connections a bulk add keeps busy (the real daemon answers one command at a time; under
    # tcpserver's default limit of 40 at once): each of a vcli daemon's workers then batches up to ~16 adds

    def add_users(self, domain: str, new_users, prepared: bool = False, exist_ok: bool = False, progress=None):
        """add_user (+ mod_user for a hash, comment or quota, + user_info) per account.  Many are
        sent over PIPELINE connections at once, so a daemon that commits the add_users waiting
        for one domain together (vcli's) makes one vpasswd rewrite of several.  Every account is
        validated before the first is sent; on an error no further one is sent, the error of the
        earliest failed account is raised (accounts after it may have been added meanwhile)."""
        entry = self.real_entry(domain)
        todo = [new if prepared else self.prepare_user(entry.real, new) for new in new_users]
        conns = [self.conn]
        if len(todo) >= 2 * self.PIPELINE and not self.plain_user:
            conns += self._more_connections(self.PIPELINE - 1)
        try:
            results = self._add_over(conns, entry, todo, exist_ok, progress)
        finally:
            for conn in conns[1:]:
                conn.close()
        return [vu for vu in results if vu is not None]

    def _more_connections(self, n: int) -> list[Connection]:
        """Up to n more sessions logged in as this one (fewer if the daemon refuses some)."""
        out = []
        for _ in range(n):
            c = Connection(self.conn.host, self.conn.port, timeout=self.conn.timeout, tls=self.conn.tls,
                           ca_file=self.conn.ca_file)
            try:
                c.connect()
                c.login(self._login, self._password)
            except (RemoteUnavailable, LoginFailed, VpopError):
                c.close()
                break
            out.append(c)
        return out

    def _add_over(self, conns: list[Connection], entry: AssignEntry, todo: list, exist_ok: bool, progress) -> list:
        if len(conns) == 1:
            out = []
            for i, new in enumerate(todo, 1):
                out.append(self._add_one(self.conn, entry, new, exist_ok))
                if progress:
                    progress(i)
            return out
        import threading

        results: list = [None] * len(todo)
        failed: list[tuple[int, BaseException]] = []
        state = {"next": 0, "done": 0}
        lock = threading.Lock()

        def work(conn: Connection) -> None:
            while True:
                with lock:
                    if failed or state["next"] >= len(todo):
                        return
                    i = state["next"]
                    state["next"] += 1
                try:
                    results[i] = self._add_one(conn, entry, todo[i], exist_ok)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
                    with lock:
                        failed.append((i, exc))
                    return
                with lock:
                    state["done"] += 1
                    if progress:
                        progress(state["done"])

        threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in conns[1:]]
        for t in threads:
            t.start()
        work(conns[0])
        for t in threads:
            t.join()
        if failed:
            raise min(failed, key=lambda f: f[0])[1]
        return results

    def _add_one(self, conn: Connection, entry: AssignEntry, new, exist_ok: bool) -> VUser | None:
        """One account over one connection: its record, or None when it exists and exist_ok."""
        address = f"{new.user}@{entry.real}"
        password = new.password
        send_hash = new.hashed is not None and not password  # a clear password is hashed by the daemon
        if send_hash:
            password = secrets.token_urlsafe(18)  # replaced by the hash below
        if password is None or password == "":
            raise UsageError("a password is required over vpopmaild")
        try:
            conn.simple(f"add_user {address} {password}")
        except VpopError as exc:
            if exc.code == -2 and exist_ok:
                return None
            if exc.code == -2:
                raise UserExists() from None
            raise
        opts = []
        if send_hash:
            opts.append(("encrypted_password", new.hashed))
        if new.gecos and new.gecos != new.user:
            opts.append(("comment", new.gecos))
        if new.quota is not None:
            opts.append(("quota", new.quota))
        if opts:
            conn.mod_user(address, opts)
        if conn is self.conn:
            return self.get_user(new.user, entry.real)
        return _vuser(pairs(conn.multi(f"user_info {address}")))

    def mod_user(self, user: str, domain: str, ch, rebuild_cdb: bool = True, enforce_no_passwd_chng: bool = False):
        if ch.dir is not None:
            raise UsageError("-D (home directory) is not available over vpopmaild")
        if not rebuild_cdb:
            self.warn("Warning: -n has no effect over vpopmaild")
        entry = self.real_entry(domain)
        address = f"{user.lower()}@{entry.real}"
        current = self.get_user(user, entry.real)
        if ch.gecos is not None and (":" in ch.gecos or len(ch.gecos) > self.s.max_gecos):
            raise VpopError(code=-20) if ":" in ch.gecos else VpopError(code=-28)
        if ch.password is not None and enforce_no_passwd_chng and (
            self.effective_flags(current, entry.real) & F.NO_PASSWD_CHNG
        ):
            raise PasswordChangeDenied()
        opts: list[tuple[str, str]] = []
        if ch.gecos is not None:
            opts.append(("comment", ch.gecos))
        if ch.password is not None:
            opts.append(("clear_text_password", ch.password))
        elif ch.hashed is not None:
            opts.append(("encrypted_password", ch.hashed))
        if ch.quota is not None:
            opts.append(("quota", ch.quota))
        gid = 0 if ch.clear_flags else current.gid
        gid = (gid | ch.set_flags) & ~ch.unset_flags
        if ch.clear_flags:
            opts.append(("clear_all_flags", "1"))
        for f in F.FLAGS:
            if f.proto_order is None and f.name != "SA_EXPERT":
                continue
            if bool(gid & f.bit) != bool((0 if ch.clear_flags else current.gid) & f.bit):
                opts.append((f.field, "1" if gid & f.bit else "0"))
        self.conn.mod_user(address, opts)
        if self.plain_user:
            self._refresh_own(ch)
        new = self.get_user(user, entry.real)
        if new.gid != gid:
            missing = F.names_of(gid & ~new.gid) + F.names_of(new.gid & ~gid)
            raise NotAuthorized(f"not authorized to change {', '.join(missing)} of {address}")
        return new

    def _refresh_own(self, ch) -> None:
        """A plain user's record after his mod_user: log in again (with the new password when he
        changed it) and take the login reply.  The old password still working means the server
        ignored the change (password changes disabled for him or his domain)."""
        if ch.hashed is not None and ch.password is None:
            return  # the new password is unknown here: the old record is all there is to show
        if ch.password is None:
            self._relogin()
            return
        try:
            self._relogin(ch.password)
        except LoginFailed:
            self._relogin()
            raise PasswordChangeDenied() from None
        self._password = ch.password

    def set_password(self, user: str, domain: str, clear: str, check_policy: bool = True,
                     enforce_no_passwd_chng: bool = True):
        from ..model import UserChanges

        return self.mod_user(user, domain, UserChanges(password=clear), enforce_no_passwd_chng=enforce_no_passwd_chng)

    def del_user(self, user: str, domain: str):
        entry = self.real_entry(domain)
        old = self.get_user(user, entry.real)
        self.conn.simple(f"del_user {user.lower()}@{entry.real}")
        return old

    # --- aliases --------------------------------------------------------------------

    def alias_names(self, domain: str) -> list[str]:
        return sorted({a for a, _ in self._alias_rows(domain)}, key=str.lower)

    def _alias_rows(self, target: str) -> list[tuple[str, str]]:
        rows = []
        for line in self._read(lambda: self.conn.multi(f"list_alias {target}")):
            addr, _, value = line.partition(" ")
            rows.append((addr.partition("@")[0], value))
        return rows

    def alias_lines(self, domain: str, alias: str) -> list[str] | None:
        rows = self._alias_rows(f"{alias.lower()}@{self.real_entry(domain).real}")
        return [v for _, v in rows] or None

    def list_aliases(self, domain: str) -> list[tuple[str, list[str]]]:
        out: dict[str, list[str]] = {}
        for a, v in self._alias_rows(self.real_entry(domain).real):
            out.setdefault(a, []).append(v)
        return sorted(out.items(), key=lambda kv: kv[0].lower())

    def add_alias_line(self, domain: str, alias: str, line: str, allow_duplicate: bool = False) -> None:
        if " " in line or not line:
            raise UsageError("an alias line with spaces cannot be sent over vpopmaild")
        entry = self.real_entry(domain)
        if not allow_duplicate and line in (self.alias_lines(entry.real, alias) or []):
            from ..errors import AliasExists

            raise AliasExists(f"alias {alias}@{entry.real} -> {line} already exists.")
        self.conn.simple(f"add_alias {alias.lower()}@{entry.real} {line}")

    def remove_alias_line(self, domain: str, alias: str, prefix: str) -> None:
        self.conn.simple(f"remove_alias {alias.lower()}@{self.real_entry(domain).real} {prefix}")

    def delete_alias(self, domain: str, alias: str) -> None:
        self.conn.simple(f"delete_alias {alias.lower()}@{self.real_entry(domain).real}")

    # --- ip map (the daemon's IP_ALIAS_DOMAINS commands) -----------------------------

    def _ip_map(self, fn):
        """`-ERR 33.x Not Available`: the daemon's vpopmail has no ip alias domains."""
        try:
            return fn()
        except RemoteError as exc:
            if "(33." in exc.message:
                raise IpAliasDomainsOff(f"the vpopmaild at {self.conn.host}:{self.conn.port} has no ip alias "
                                        "domains (Not Available)") from None
            if "(38." in exc.message:
                raise DomainNotFound() from None
            raise

    def ip_maps(self) -> list[tuple[str, str]]:
        lines = self._ip_map(lambda: self._read(lambda: self.conn.multi("show_ip_map")))
        return [(f[0], f[1]) for f in (x.split() for x in lines) if len(f) >= 2]

    def get_ip_map(self, ip: str) -> str | None:
        check_ip(ip)
        try:
            lines = self._ip_map(lambda: self._read(lambda: self.conn.multi(f"get_ip_map {ip}")))
        except RemoteError:  # -ERR 0.3003 error: no such IP
            return None
        f = lines[0].split() if lines else []
        return f[1] if len(f) >= 2 else None

    def add_ip_map(self, ip: str, domain: str) -> None:
        check_ip(ip)
        self._ip_map(lambda: self.conn.simple(f"add_ip_map {ip} {domain.lower()}"))

    def del_ip_map(self, ip: str, domain: str) -> None:
        """The daemon answers +OK for a pair it does not have: look first, as the local store does."""
        check_ip(ip)
        domain = domain.lower()
        if (ip, domain) not in self.ip_maps():
            raise IpMapNotFound(f"no ip map {ip} {domain}")
        self._ip_map(lambda: self.conn.simple(f"del_ip_map {ip} {domain}"))


def pairs_multi(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(" ")
        out.setdefault(name, []).append(value)
    return out


def _vuser(data: dict[str, str], listing: bool = False) -> VUser:
    clear = data.get("clear_text_password")
    if clear == "(null)" and listing:
        clear = None
    gid = int(data["gidflags"]) if "gidflags" in data else sum(
        f.bit for f in F.FLAGS if data.get(f.field) == "1")
    u = VUser(data.get("name", ""), data.get("encrypted_password", ""), "1", gid, data.get("comment", ""),
              data.get("user_dir", ""), data.get("quota", ""), clear or None)
    parts = u.dir.rstrip("/").split("/")
    if "domains" in parts:
        i = len(parts) - 1 - parts[::-1].index("domains")
        u._domain = parts[i + 1] if i + 1 < len(parts) else ""  # type: ignore[attr-defined]
    return u
