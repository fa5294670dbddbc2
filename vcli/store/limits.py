"""Domain limits: `.qmailadmin-limits`, falling back to `etc/vlimits.default` (spec/store.md §8).

The value type and its text codec are pure and live in `vcli.model`; re-exported here for old
callers only.
"""

from ..model import BOOL_KEYS, INT_KEYS, PERM_KEYS, U64_KEYS, Limits  # noqa: F401
