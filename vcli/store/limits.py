"""Domain limits: `.qmailadmin-limits`, falling back to `etc/vlimits.default` (spec/store.md §8)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from .. import flags

INT_KEYS = ("maxpopaccounts", "maxaliases", "maxforwards", "maxautoresponders", "maxmailinglists")
U64_KEYS = ("quota", "maxmsgcount", "default_quota", "default_maxmsgcount")
# disable_* keywords in the order vpopmail writes them
BOOL_KEYS = (
    "disable_pop", "disable_imap", "disable_dialup", "disable_password_changing", "disable_webmail",
    "disable_external_relay", "disable_smtp", "disable_spamassassin", "delete_spam", "disable_maildrop",
)
PERM_KEYS = ("perm_account", "perm_alias", "perm_forward", "perm_autoresponder", "perm_quota", "perm_defaultquota")


@dataclass
class Limits:
    maxpopaccounts: int = -1
    maxaliases: int = -1
    maxforwards: int = -1
    maxautoresponders: int = -1
    maxmailinglists: int = -1
    quota: int = 0
    maxmsgcount: int = 0
    default_quota: int = 0
    default_maxmsgcount: int = 0
    disable_pop: bool = False
    disable_imap: bool = False
    disable_dialup: bool = False
    disable_password_changing: bool = False
    disable_webmail: bool = False
    disable_external_relay: bool = False
    disable_smtp: bool = False
    disable_spamassassin: bool = False
    delete_spam: bool = False
    disable_maildrop: bool = False
    perm_account: int = 0
    perm_alias: int = 0
    perm_forward: int = 0
    perm_autoresponder: int = 0
    perm_maillist: int = 0
    perm_maillist_users: int = 0
    perm_maillist_moderators: int = 0
    perm_quota: int = 0
    perm_defaultquota: int = 0

    @classmethod
    def parse(cls, data: bytes) -> Limits:
        lim = cls()
        for raw in re.split(rb"[\r\n]", data):
            line = raw.decode("latin-1")
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([^ \t:]*)[ \t:]*(.*)", line)
            name, value = m.group(1), m.group(2)
            if name in INT_KEYS or name in U64_KEYS:
                setattr(lim, name, _atoi(value))
            elif name in BOOL_KEYS:
                setattr(lim, name, True)
            elif name in PERM_KEYS:
                setattr(lim, name, _atoi(value) & 7)
            elif name == "perm_maillist":
                v = _atoi(value)
                lim.perm_maillist, lim.perm_maillist_users, lim.perm_maillist_moderators = v & 7, (v >> 3) & 7, (v >> 6) & 7
        return lim

    def dump(self) -> bytes:
        """The file exactly as vpopmail's vset_limits writes it (perm_quota bug included)."""
        out = [f"{k}: {getattr(self, k)}" for k in INT_KEYS + U64_KEYS]
        out += [k for k in BOOL_KEYS if getattr(self, k)]
        out += [f"{k}: {getattr(self, k)}" for k in ("perm_account", "perm_alias", "perm_forward", "perm_autoresponder")]
        out.append(f"perm_maillist: {self.perm_maillist & 7}")
        out.append(
            f"perm_quota: {self.perm_quota | (self.perm_maillist_users << 3) | (self.perm_maillist_moderators << 6)}"
        )
        out.append(f"perm_defaultquota: {self.perm_defaultquota}")
        return ("\n".join(out) + "\n").encode()

    def flag_mask(self) -> int:
        """gid bits the domain ORs into every user's effective flags."""
        mask = 0
        for f in flags.LIMIT_FLAGS:
            if getattr(self, f.limits_key):
                mask |= f.bit
        return mask

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _atoi(text: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0
