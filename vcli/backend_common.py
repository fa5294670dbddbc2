"""What the local store and the remote backend share: the operations defined by the others."""

from __future__ import annotations

from . import flags as F
from .errors import DomainNotFound, UserNotFound


class BackendCommon:
    """Subclasses provide find_domain, get_user, add_users, mod_user and domain_mask."""

    def domain(self, domain: str):
        entry = self.find_domain(domain)
        if entry is None:
            raise DomainNotFound()
        return entry

    def real_entry(self, domain: str):
        """Entry for the real domain behind `domain` (alias names resolved)."""
        entry = self.domain(domain)
        return entry if not entry.is_alias else type(entry)(entry.real, entry.real, entry.uid, entry.gid, entry.dir)

    def find_user(self, user: str, domain: str):
        try:
            return self.get_user(user, domain)
        except (UserNotFound, DomainNotFound):
            return None

    def effective_flags(self, user, domain: str, mask: int | None = None) -> int:
        """pw_flags: gid OR the domain's limit bits, unless the user overrides limits."""
        if user.gid & F.V_OVERRIDE:
            return user.gid
        mask = self.domain_mask(domain) if mask is None else mask
        return user.gid | (mask or 0)

    def add_user(self, domain: str, new):
        return self.add_users(domain, [new])[0]

    def mod_users(self, domain: str, ch, users: list[str] | None = None, rebuild_cdb: bool = True,
                  enforce_no_passwd_chng: bool = False) -> list:
        """mod_user of every user of the domain (or of `users`), one at a time; the local Store
        does it in one commit instead (vcli/store/store.py)."""
        wanted = None if users is None else {u.lower() for u in users}
        names = [u.name for u in self.list_users(domain) if wanted is None or u.name in wanted]
        return [self.mod_user(n, domain, ch.replace(), rebuild_cdb=rebuild_cdb,
                              enforce_no_passwd_chng=enforce_no_passwd_chng) for n in names]

    def set_quota(self, user: str, domain: str, quota_text: str):
        """vsetuserquota on one account."""
        from .model import UserChanges

        return self.mod_user(user, domain, UserChanges(quota=quota_text))
