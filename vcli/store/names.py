"""The default domain of this site (env VPOPMAIL_DOMAIN, else etc/defaultdomain).

The name rules themselves are pure and live in `vcli.model`; they are re-exported here for old
callers only.
"""

from __future__ import annotations

import os

from ..model import (  # noqa: F401 - re-exported for old callers
    MAX_ADDRESS,
    MAX_DOMAIN,
    check_domain_chars,
    check_new_domain,
    check_new_user,
    check_user,
    parse_address,
    split_address,
)

_ENV_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.@-")


def default_domain(vpopmail_dir: str | os.PathLike | None) -> str:
    env = os.environ.get("VPOPMAIL_DOMAIN")
    if env:
        return "".join(c if c in _ENV_CHARS else "_" for c in env).lower()
    if vpopmail_dir:
        try:
            with open(os.path.join(vpopmail_dir, "etc", "defaultdomain"), encoding="ascii") as f:
                return f.readline().strip().lower()
        except (OSError, UnicodeDecodeError):
            pass
    return ""
