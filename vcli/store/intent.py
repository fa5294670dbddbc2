"""A domain's intent record: what an account change still has to do after vpasswd.

vpasswd is the commit point of every account change.  Before it touches anything, a
change writes `<domain>/.vcli-intent` (atomically) naming the mailboxes it builds under
temp names, the mailboxes it removes, the small files it rewrites and the users whose
maildirsize follows their quota.  It then builds, renames vpasswd into place, finishes
(vpasswd.cdb, renames, files, removals) and deletes the record.

A SIGKILL or power cut anywhere leaves the record behind, and whoever takes the domain's
lock next replays it (`Store._replay`): each user is finished if vpasswd shows the change
and undone if it does not.  So readers and writers only ever see the old state or the
new one.  The record is JSON, written 0600 with the domain's owner; real vpopmail
ignores it.
"""

from __future__ import annotations

import os
import time

from ..errors import CorruptStore
from .fsutil import NOBODY, Owner, atomic_write, fsync_dir, journal

NAME = ".vcli-intent"
TMP_PREFIX = ".vcli-new."
MAILDIRSIZE_TMP = "maildirsize.vcli-new"  # in Maildir/tmp


def path(ddir: str) -> str:
    return os.path.join(ddir, NAME)


def tmp_home(home: str) -> str:
    """Where the tree of a new mailbox is built before the commit (beside its final place)."""
    return os.path.join(os.path.dirname(home), f"{TMP_PREFIX}{os.path.basename(home)}")


def pending(ddir: str) -> bool:
    return journal() is None and os.path.lexists(path(ddir))


def begin(ddir: str, op: str, owner: Owner = NOBODY, *, add: dict[str, str] | None = None,
          remove: dict[str, str] | None = None, files: dict[str, str] | None = None,
          maildirsize: list[str] | None = None, lines: dict[str, bytes] | None = None) -> bool:
    """Record a change before making it; False (nothing written) in a dry run.

    add: user -> final home of a new mailbox (built at tmp_home(home) first);
    remove: user -> home to delete once the user is out of vpasswd;
    files: path -> name of its staged next content beside it, renamed in once committed;
    maildirsize: users whose Maildir/maildirsize is rewritten from their committed quota;
    lines: user -> the vpasswd line a modification writes (how a replay tells it committed).
    """
    if journal() is not None:
        return False
    record = {
        "v": 1,
        "op": op,
        "pid": os.getpid(),
        "time": int(time.time()),
        "add": add or {},
        "remove": remove or {},
        "files": files or {},
        "maildirsize": maildirsize or [],
        "lines": {u: line.decode("utf-8", "surrogateescape") for u, line in (lines or {}).items()},
    }
    import json  # only when a write records its intent: lookups start without it (issue 11 item 4)

    atomic_write(path(ddir), json.dumps(record, separators=(",", ":")).encode(), 0o600, owner,
                 tmp_name=f"{NAME}.tmp")
    return True


def load(ddir: str) -> dict | None:
    try:
        with open(path(ddir), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    import json

    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("v") != 1:
            raise ValueError("unknown version")
        record.setdefault("lines", {})
        for key, kind in (("add", dict), ("remove", dict), ("files", dict), ("maildirsize", list), ("lines", dict)):
            if not isinstance(record.get(key), kind):
                raise ValueError(f"{key} is not a {kind.__name__}")
        return record
    except ValueError as exc:
        raise CorruptStore(f"{path(ddir)}: unreadable intent record ({exc})") from None


def end(ddir: str) -> None:
    if journal() is not None:
        return
    try:
        os.unlink(path(ddir))
    except FileNotFoundError:
        return
    fsync_dir(ddir)


def describe(record: dict) -> str:
    """One line for `vcli check`: what was interrupted."""
    users = sorted(set(record["add"]) | set(record["remove"]) | set(record["maildirsize"]))
    shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("time", 0)))
    return f"interrupted {record['op']} (pid {record.get('pid')}, {when}{', ' + shown if shown else ''})"
