"""A domain listing's per-user disk reads on two cores.

`vcli vuserinfo -D DOMAIN -o json` reads, for each user, the Maildir (usage) and the lastauth
file: about 25 us of system calls a user, more than half of a 100,000-user listing; the classic
`vuserinfo -D` reads the lastauth file of each (opening it is most of that listing's time) and
the usage of those with a quota.  On a local cdb store a forked child reads them for every other
user while this process does the rest and writes the output; the child's answers come through a
pipe, so both run at most a pipe's worth apart and memory stays constant.  Any doubt (a record
out of step, the child gone) and this process reads the rest itself: the output is the same
either way.
"""

from __future__ import annotations

import os
import signal

from ..model import UserUsage

BESIDE_FROM = 5000  # users of a domain from which the child is worth its fork


def _everyone(u) -> bool:
    return True


def _reads(store, real: str, u, wants_usage, wants_auth: bool) -> tuple:
    """(usage or None, lastauth or None) of one user, as asked."""
    return (store.user_usage(u) if wants_usage is not None and wants_usage(u) else None,
            store.lastauth(u, real) if wants_auth else None)


def _child_helps(store, real: str, wants_usage, wants_auth: bool) -> bool:
    """A local cdb store, something to read, and a domain big enough for the fork.  Nothing else
    is asked for it (an SQL store's dir_control or a remote daemon is not)."""
    if (wants_usage is None and not wants_auth) or getattr(getattr(store, "auth", None), "name", None) != "cdb":
        return False
    return store.user_counter(store.real_entry(real)) >= BESIDE_FROM


def usage_and_lastauth(store, real: str, pairs, wants_usage=_everyone, wants_auth: bool = True):
    """(user, extra, UserUsage, lastauth) for each (user, extra) of the iterator `pairs` (the
    domain's listing, in vpasswd order).  `wants_usage(user)`: whether the user's usage is read
    (None: nobody's); `wants_auth`: whether lastauth is (else None for all)."""
    if not _child_helps(store, real, wants_usage, wants_auth):
        for u, extra in pairs:
            yield u, extra, *_reads(store, real, u, wants_usage, wants_auth)
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(store, real, r, w, wants_usage, wants_auth)  # never returns
    os.close(w)
    feed = os.fdopen(r, "rb")
    in_step = True
    try:
        for i, (u, extra) in enumerate(pairs):
            got = None
            if i % 2 and in_step:
                got = _answer(feed, u)
                in_step = got is not None  # out of step once: the rest is read here
            if got is None:
                yield u, extra, *_reads(store, real, u, wants_usage, wants_auth)
            else:
                yield u, extra, *got
    finally:
        feed.close()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def _child(store, real: str, r: int, w: int, wants_usage, wants_auth: bool) -> None:
    """Every other user's (odd positions) usage and lastauth as one tab-separated line each:
    name, bytes, messages, percent (all three empty: usage not wanted), lastauth time, lastauth
    content (hex where bytes may be anything).  Leaves by os._exit: nothing of the parent's
    (buffers, atexit) runs here."""
    code = 1
    try:
        os.close(r)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # the parent stopped reading: go
        out = os.fdopen(w, "wb", buffering=1 << 16)
        for i, u in enumerate(store.list_users(real)):
            if not i % 2:
                continue
            us, auth = _reads(store, real, u, wants_usage, wants_auth)
            usage = (b"", b"", b"") if us is None else (
                b"%d" % us.bytes, b"%d" % us.messages, b"" if us.percent is None else b"%d" % us.percent)
            out.write(b"\t".join((
                u.name.encode("utf-8", "surrogateescape").hex().encode(), *usage,
                b"" if auth is None else repr(auth[0]).encode(),
                b"" if auth is None else auth[1].encode("latin-1").hex().encode(),
            )) + b"\n")
        out.flush()
        code = 0
    except BaseException:  # noqa: BLE001, S110 - the parent reads what is missing itself
        pass
    finally:
        os._exit(code)


def _answer(feed, u):
    """The child's (UserUsage, lastauth) for `u`, or None when its next line is not u's."""
    line = feed.readline()
    parts = line.rstrip(b"\n").split(b"\t")
    if len(parts) != 6 or parts[0] != u.name.encode("utf-8", "surrogateescape").hex().encode():
        return None
    try:
        usage = UserUsage(int(parts[1]), int(parts[2]), int(parts[3]) if parts[3] else None) if parts[1] else None
        auth = None if not parts[4] else (float(parts[4]), bytes.fromhex(parts[5].decode()).decode("latin-1"))
    except ValueError:
        return None
    return usage, auth
