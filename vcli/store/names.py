"""Address parsing and name rules (spec/store.md §12).

vpopmail accepts some names that are dangerous as path components (`..`, names
with `/`, a leading `-` or `.`); vcli refuses them with the same "Illegal
username" error, because they are the path-traversal holes of the C tools.
"""

from __future__ import annotations

import os
import re

from ..errors import IllegalUsername, InvalidDomain, TooLong, VpopError

# Bytes vpopmail allows in a user name, minus '/' (a path separator for us).
_USER_RE = re.compile(r"[!#$&'*+\-.0-9=?A-Z^_`a-z{|}~]+\Z")
_DOMAIN_RE = re.compile(r"[A-Za-z0-9.\-]+\Z")
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
MAX_ADDRESS = 156
MAX_DOMAIN = 96


def default_domain(vpopmail_dir: str | os.PathLike | None) -> str:
    env = os.environ.get("VPOPMAIL_DOMAIN")
    if env:
        return re.sub(r"[^A-Za-z0-9_.@-]", "_", env).lower()
    if vpopmail_dir:
        try:
            with open(os.path.join(vpopmail_dir, "etc", "defaultdomain"), encoding="ascii") as f:
                return f.readline().strip().lower()
        except (OSError, UnicodeDecodeError):
            pass
    return ""


def split_address(address: str, default: str = "") -> tuple[str, str]:
    """(user, domain) as vpopmail's parse_email splits it: lower-cased, '@' then '%' then '/'."""
    text = address.lower()[:MAX_ADDRESS]
    for sep in "@%/":
        if sep in text:
            user, _, domain = text.partition(sep)
            return user, domain
    return text, default


def check_user(user: str, max_len: int = 64) -> str:
    """Validate a (lower-cased) local part; raise IllegalUsername or TooLong."""
    if not user.isascii() or not _USER_RE.match(user):
        raise IllegalUsername()
    if len(user) > max_len:
        raise TooLong(f"user name too long (max={max_len})", -25)
    if user.startswith(("-", ".")) or ".." in user:
        raise IllegalUsername()
    return user


def check_new_user(user: str, max_len: int = 64) -> str:
    """check_user plus what only account creation refuses: 1-char names and `vpasswd`."""
    check_user(user, max_len)
    if len(user) < 2 or user == "vpasswd":
        raise IllegalUsername()
    return user


def check_domain_chars(domain: str) -> str:
    """The character-set check every tool applies to a domain name."""
    if not domain or not domain.isascii() or not _DOMAIN_RE.match(domain):
        raise InvalidDomain()
    if len(domain) > MAX_DOMAIN:
        raise TooLong(f"domain name too long (max={MAX_DOMAIN})", -26)
    if ".." in domain or domain.startswith(("-", ".")):
        raise InvalidDomain()
    return domain


def check_new_domain(domain: str) -> str:
    """vadddomain's stricter rules: >= 3 chars, a dot, TLD 2-63 chars, sane labels."""
    domain = check_domain_chars(domain.lower())
    if len(domain) < 3 or "." not in domain or domain.endswith(("-", ".")):
        raise InvalidDomain()
    labels = domain.split(".")
    if not 2 <= len(labels[-1]) <= 63 or not all(_LABEL_RE.match(lab) and len(lab) <= 63 for lab in labels):
        raise InvalidDomain()
    return domain


def parse_address(address: str, default: str = "", max_user: int = 64) -> tuple[str, str]:
    """Split and validate an address; every failure is vpopmail's "Illegal username"."""
    if any(c in address for c in "\0\n\r"):
        raise IllegalUsername()
    user, domain = split_address(address, default)
    check_user(user, max_user)
    if domain:
        try:
            check_domain_chars(domain)
        except VpopError as exc:
            if isinstance(exc, TooLong):
                raise
            raise IllegalUsername() from None
    return user, domain
