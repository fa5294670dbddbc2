"""How users and domains are shown: vpopmail's exact text, and the stable JSON shape."""

from __future__ import annotations

import time

from .. import flags as F

SEPARATOR = "-" * 42


def asctime(ts: float) -> str:
    """C asctime(localtime(ts)) without the newline: 'Mon Nov  4 18:43:00 2025'."""
    return _by_second(_ASC, "%a %b %e %H:%M:%S %Y", ts)


_ASC: dict[int, str] = {}
_ISO: dict[int, str] = {}


def _by_second(memo: dict[int, str], fmt: str, t: float) -> str:
    """strftime(fmt, localtime(t)), memoized by whole second (localtime's): the users of a bulk
    import share a few hundred creation seconds, and localtime + strftime were ~a tenth of a
    listing's per-user work.  Exact: the text of a second depends only on the process's zone
    (TZ), which it does not change.  A full memo is started again."""
    key = int(t // 1)
    text = memo.get(key)
    if text is None:
        if len(memo) >= 65536:
            memo.clear()
        text = memo[key] = time.strftime(fmt, time.localtime(key))
    return text


READ = object()  # the `auth` default of vuserinfo_lines and user_json: read lastauth itself


def lastauth_lines(auth: tuple[float, str] | None) -> list[str]:
    if auth is None:
        return ["last auth: Never logged in"]
    mtime, content = auth
    if content == "0.0.0.0":
        return [f"account created: {asctime(mtime)}", "last auth: Never logged in"]
    return [f"last auth: {asctime(mtime)}", f"last auth ip: {content}"]


def limits_lines(gid: int, eff: int) -> list[str]:
    if eff == 0:
        return ["limits: No user limits set."]
    out = ["limits:"]
    for f in F.INFO_ORDER:
        if eff & f.bit:
            out.append(f"        {f.label}" + ("" if gid & f.bit else " (*)"))
    if gid != eff:
        out.append("        * = set by domain-wide limits")
    return out


def usage_text(quota: str, pct: int | None) -> str:
    return "NOQUOTA" if quota == "NOQUOTA" else f"{pct or 0}%"


# vuserinfo selectors in the fixed order they print
SELECTORS = "npCugcdqQl"


def vuserinfo_lines(store, user, domain: str, selectors: str, listing: bool = False,
                    mask: int | None = None, usage=None, auth=READ) -> list[str]:
    """vuserinfo's block for one user; selectors '' = the full (-a) view.

    `mask` is the domain's limit bits when the caller has them (listings read them once);
    `usage`, `auth`: the user's usage and lastauth when the caller has read them (listing.py).
    """
    clear = user.clear
    if clear is None:
        clear = "(null)" if listing else ""

    def usage_line() -> str:
        if user.quota == "NOQUOTA":
            return "NOQUOTA"
        return usage_text(user.quota, (usage if usage is not None else store.user_usage(user)).percent)

    def lastauth() -> list[str]:
        return lastauth_lines(store.lastauth(user, domain) if auth is READ else auth)

    if not selectors:
        eff = store.effective_flags(user, domain, mask)
        return [
            f"name:   {user.name}",
            f"passwd: {user.passwd}",
            f"clear passwd: {clear}",
            f"comment/gecos: {user.gecos}",
            f"uid:    {user.uid}",
            f"gid:    {user.gid}",
            f"flags:  {eff}",
            f"gecos: {user.gecos}",
            *limits_lines(user.gid, eff),
            f"dir:       {user.dir}",
            f"quota:     {user.quota}",
            f"usage:     {usage_line()}",
            *lastauth(),
        ]
    out: list[str] = []
    for sel in SELECTORS:
        if sel not in selectors:
            continue
        if sel == "n":
            out.append(user.name)
        elif sel == "p":
            out.append(user.passwd)
        elif sel == "C":
            if store.s.clear_passwords:
                out.append(clear)
        elif sel == "u":
            out.append(user.uid)
        elif sel == "g":
            out.append(str(user.gid))
        elif sel == "c":
            out.append(user.gecos)
        elif sel == "d":
            out.append(user.dir)
        elif sel == "q":
            out.append(user.quota)
        elif sel == "Q":
            out.append(usage_line())
        elif sel == "l":
            out.extend(lastauth())
    return out


def json_indented(value, nl: str = "\n  ") -> str:
    """json.dumps(value, indent=2) of a value already nested at the depth `nl` opens (its newline
    and indent), byte for byte -- through the C string encoder: json.dumps with an indent runs
    the pure-Python encoder, two thirds of a 100,000-user JSON listing's time.  (json is imported
    here, not by the module: the classic lookup path does without it.)"""
    global _dumper
    if _dumper is None:
        _dumper = _make_dumper()
    return _dumper(value, nl)


_dumper = None


def _make_dumper():
    """json_indented's encoder, made on first use (json is imported then)."""
    import json
    from json.encoder import encode_basestring_ascii as enc

    keyed: dict[tuple, list[str]] = {}  # a row's keys, in order -> their encoded '"key": ' heads

    def dump(v, nl: str) -> str:
        if type(v) is dict and v:  # a row: its members in one loop, the keys encoded once per shape
            keys = tuple(v)
            heads = keyed.get(keys)
            if heads is None and all(type(k) is str for k in keys):
                heads = [enc(k) + ": " for k in keys]
                if len(keyed) < 64:  # a listing has a shape or two; never a cache without end
                    keyed[keys] = heads
            if heads is not None:
                inner = nl + "  "
                parts = []
                add = parts.append
                for head, x in zip(heads, v.values(), strict=True):
                    t = type(x)
                    if t is str:
                        add(head + enc(x))
                    elif x is None:
                        add(head + "null")
                    elif t is int:
                        add(head + int.__repr__(x))
                    elif t is list and x and all(type(y) is str for y in x):
                        add(head + "[" + inner + "  " + ("," + inner + "  ").join(map(enc, x)) + inner + "]")
                    elif t is list and not x:
                        add(head + "[]")
                    else:
                        add(head + dump(x, inner))
                return "{" + inner + ("," + inner).join(parts) + nl + "}"
        if isinstance(v, str):
            return enc(v)
        if v is None or v is True or v is False:
            return "null" if v is None else ("true" if v else "false")
        if type(v) is int:
            return int.__repr__(v)
        if isinstance(v, list | tuple):
            if not v:
                return "[]"
            inner = nl + "  "
            return "[" + inner + ("," + inner).join(dump(x, inner) for x in v) + nl + "]"
        # {}, floats, dict subclasses and odd keys: as json writes them
        return json.dumps(v, indent=2).replace("\n", nl)

    return dump


def _iso_second(t: float) -> str:
    """ISO 8601 local time of `t`, as the JSON shape has it (memoized, see _by_second)."""
    return _by_second(_ISO, "%Y-%m-%dT%H:%M:%S%z", t)


def user_json(store, user, domain: str, with_usage: bool = True, mask: int | None = None,
              names=F.names_of, usage=None, auth=READ) -> dict:
    """The documented JSON shape of a user (README "JSON output").  A listing passes the domain's
    limit bits once (`mask`) and a memoized `names`; usage reads maildirsize only if asked.
    `usage`, `auth`: the user's usage and lastauth when the caller has read them (listing.py)."""
    eff = store.effective_flags(user, domain, mask)
    if auth is READ:
        auth = store.lastauth(user, domain)
    d = {
        "address": f"{user.name}@{domain}",
        "name": user.name,
        "domain": domain,
        "passwd": user.passwd,
        "clear": user.clear,
        "uid": user.uid,
        "gid": user.gid,
        "flags": eff,
        "flag_names": names(eff),
        "domain_flags": names(eff & ~user.gid),
        "gecos": user.gecos,
        "dir": user.dir,
        "quota": user.quota,
        "created": None,
        "last_auth": None,
        "last_auth_ip": None,
    }
    if with_usage:
        u = usage if usage is not None else store.user_usage(user)
        d["usage"] = {"bytes": u.bytes, "messages": u.messages, "percent": u.percent}
    if auth:
        iso = _iso_second(auth[0])
        if auth[1] == "0.0.0.0":
            d["created"] = iso
        else:
            d["last_auth"], d["last_auth_ip"] = iso, auth[1]
    return d


def vdominfo_lines(info, selectors: str, real_dir: str, aliases_after: bool) -> list[str]:
    """vdominfo's block for one users/assign entry."""
    e = info.entry
    name = f"{e.name} (alias of {e.real})" if e.is_alias else e.name
    if not selectors:
        out = [f"domain: {name}", f"uid:    {e.uid}", f"gid:    {e.gid}", f"dir:    {real_dir}",
               f"users:  {info.users}"]
    else:
        values = {"n": name, "u": str(e.uid), "g": str(e.gid), "d": real_dir, "t": str(info.users), "r": e.real}
        out = [values[s] for s in "nugdtr" if s in selectors]
    if aliases_after:
        out += [f"alias: {a}" for a in info.aliases]
    return out


def domain_json(info) -> dict:
    e = info.entry
    return {
        "domain": e.name,
        "real": e.real,
        "alias_of": e.real if e.is_alias else None,
        "uid": e.uid,
        "gid": e.gid,
        "dir": e.dir,
        "users": info.users,
        "aliases": list(info.aliases),
    }


def dry_run_lines(j) -> list[str]:
    """What a dry run would have changed, file by file (text files as +/- lines)."""
    order: list[str] = []
    first_old: dict[str, bytes | None] = {}
    last_new: dict[str, bytes | None] = {}
    out: list[str] = []
    for kind, path, old, new in j.events:
        if kind in ("write", "remove"):
            if path not in first_old:
                first_old[path] = old
                order.append(path)
            last_new[path] = new
        elif kind == "mkdir":
            out.append(f"would create directory {path}")
        elif kind == "mailbox":
            out.append(f"would create mailbox {path} (Maildir/{{cur,new,tmp}}, lastauth)")
        elif kind == "remove-tree":
            out.append(f"would remove the tree {path}")
        elif kind == "signal":
            out.append(f"would signal {path}")
        elif kind == "sql":  # an SQL site: the statement (checked by the server, rolled back)
            out.append(f"would run: {path}")
    for path in order:
        old, new = first_old[path], last_new[path]
        if old == new:
            continue
        if new is None:
            out.append(f"would remove {path}")
            continue
        verb = "create" if old is None else "rewrite"
        if _is_text(old) and _is_text(new):
            out.append(f"would {verb} {path}:")
            old_lines = (old or b"").decode("utf-8", "replace").splitlines()
            new_lines = new.decode("utf-8", "replace").splitlines()
            gone, added = _multiset_diff(old_lines, new_lines)
            secret = path.endswith("/vpasswd")
            out += [f"  - {_mask(x) if secret else x}" for x in gone]
            out += [f"  + {_mask(x) if secret else x}" for x in added]
        else:
            out.append(f"would {verb} {path} ({len(new)} bytes)")
    return out or ["nothing would change"]


def _is_text(data: bytes | None) -> bool:
    if data is None:
        return True
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _multiset_diff(old: list[str], new: list[str]) -> tuple[list[str], list[str]]:
    """(lines only in old, lines only in new), counting repeats, in file order."""
    from collections import Counter

    surplus_old, surplus_new = Counter(old) - Counter(new), Counter(new) - Counter(old)
    gone, added = [], []
    for lines, surplus, dest in ((old, surplus_old, gone), (new, surplus_new, added)):
        for x in lines:
            if surplus[x] > 0:
                dest.append(x)
                surplus[x] -= 1
    return gone, added


def _mask(line: str) -> str:
    """A vpasswd line with any clear-text password field (8th) hidden."""
    parts = line.split(":")
    if len(parts) > 7:
        parts = parts[:7] + ["*"]
    return ":".join(parts)
