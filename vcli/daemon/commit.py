"""Group commit: the add_user/mod_user/del_user requests of one worker that wait for the same
domain are applied together, in one vpasswd rewrite and one cdb rebuild (issue 11 item 3).

Each session calls `add_user`/`mod_user`/`del_user` from its own thread (serve.py runs the
sessions' commands in a thread pool) with the Store's signatures, and gets the Store's answer:
the record, or the exception the Store would have raised for that request alone.  The first
request for a domain leads: it takes the domain lock (waiting there for another worker process
if need be), then takes every request queued for the domain meanwhile and applies them grouped
by kind, each group one batch of the auth module (add_users, modify_users, delete_users); two
requests naming the same user keep their arrival order (see `_runs`).  A request that would
fail on its own (the user exists, is not there) is answered with its error and left out of the
batch; if the batch itself fails, its requests are applied one by one so that each gets its
true answer.  The leader hands over to
the next waiting request when its own is answered, so nobody serves others forever.

The work that needs no lock (validation, hashing a password) is done by the requesting thread
before it queues.  Rights checks stay in the session (wire.py).
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext

from ..errors import UserExists, UserNotFound

ADD, MOD, DEL = "add", "mod", "del"
# A leader handed over from the previous one waits this long before taking the domain lock again:
# another worker process polling for it (fsutil.LOCK_POLL_MAX apart) gets its turn, and this
# worker's batch grows meanwhile.
HANDOVER_PAUSE = 0.012


class _Request:
    __slots__ = ("kind", "name", "payload", "maildirsize", "done", "lead", "finished", "result", "error")

    def __init__(self, kind: str, name: str, payload, maildirsize: bool = False):
        self.kind, self.name, self.payload, self.maildirsize = kind, name, payload, maildirsize
        self.done = threading.Event()
        self.lead = False  # handed the leader's role instead of an answer
        self.finished = False
        self.result = None
        self.error: BaseException | None = None

    def answer(self, result=None, error: BaseException | None = None) -> None:
        self.result, self.error, self.finished = result, error, True
        self.done.set()

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    """The Store's three single-user writes, coalesced per domain (one instance per worker)."""

    def __init__(self, store):
        self.store = store
        self.guard = threading.Lock()
        self.queues: dict[str, list[_Request]] = {}
        self.leading: set[str] = set()  # domains whose leader is at work
        self.batches = 0  # commits made by batches of more than one request (for tests and figures)

    # --- the Store's interface -----------------------------------------------------------------

    def add_user(self, domain: str, new):
        store = self.store
        store._check_root()
        entry = store.real_entry(domain)
        from ..store.passwords import Policy

        prepared = store.prepare_user(entry.real, new, Policy.load(store.root))  # hashed here, unlocked
        return self._submit(entry, _Request(ADD, prepared.user, prepared))

    def mod_user(self, user: str, domain: str, ch, rebuild_cdb: bool = True, enforce_no_passwd_chng: bool = False):
        store = self.store
        if not rebuild_cdb or enforce_no_passwd_chng:
            return store.mod_user(user, domain, ch, rebuild_cdb, enforce_no_passwd_chng)
        entry = store.real_entry(domain)
        change, q = store._user_change(entry, ch, False, fresh_hash=False)
        return self._submit(entry, _Request(MOD, user.lower(), change, maildirsize=q is not None))

    def del_user(self, user: str, domain: str):
        store = self.store
        entry = store.real_entry(domain)
        user = user.lower()
        if store._catchall_user(entry) == user:
            from ..errors import CatchallProtected

            raise CatchallProtected()
        return self._submit(entry, _Request(DEL, user, None))

    # --- leader and followers --------------------------------------------------------------------

    def _submit(self, entry, req: _Request):
        key = entry.real
        with self.guard:
            self.queues.setdefault(key, []).append(req)
            lead = key not in self.leading
            if lead:
                self.leading.add(key)
        if not lead:
            req.done.wait()
            if not req.lead:
                return req.outcome()
            time.sleep(HANDOVER_PAUSE)
        try:
            while not req.finished:
                self._round(entry, req)
        finally:
            self._hand_over(key)
        return req.outcome()

    def _hand_over(self, key: str) -> None:
        with self.guard:
            queue = self.queues.get(key)
            if queue:
                queue[0].lead = True
                queue[0].done.set()
            else:
                self.queues.pop(key, None)
                self.leading.discard(key)

    def _round(self, entry, mine: _Request) -> None:
        """Take the domain lock, then everything queued for the domain, and apply it."""
        lock = getattr(self.store.auth, "domain_lock", None)
        batch: list[_Request] | None = None
        try:
            with lock(entry) if lock else nullcontext():
                with self.guard:
                    batch = self.queues.pop(entry.real, [])
                for run in _runs(batch):
                    self._apply(entry, run)
        except BaseException as exc:  # the lock itself (busy, unreadable), or a read under it
            if batch is None:  # nothing taken: only the leader's own request fails; the rest wait on
                with self.guard:
                    queue = self.queues.get(entry.real) or []
                    if mine in queue:
                        queue.remove(mine)
                batch = [mine]
            for r in batch:
                if not r.finished:
                    r.answer(error=exc)

    def _apply(self, entry, run: list[_Request]) -> None:
        kind = run[0].kind
        valid = self._valid(entry, run) if kind == ADD else run
        if not valid:
            return
        try:
            results = self._batch(entry, kind, valid)
        except Exception as exc:  # noqa: BLE001 - handled per request below
            if getattr(exc, "committed", False) or len(valid) == 1:
                for r in valid:  # committed (and announced): that is each request's true answer
                    r.answer(error=exc)
                return
            for r in valid:
                try:
                    _answer(r, self._batch(entry, kind, [r])[0])
                except Exception as one:  # noqa: BLE001 - this request's own answer
                    r.answer(error=one)
            return
        if len(valid) > 1:
            self.batches += 1
        for r, res in zip(valid, results, strict=True):
            _answer(r, res)

    def _valid(self, entry, run: list[_Request]) -> list[_Request]:
        """The adds that can be made: a name already there, or earlier in the run, is UserExists."""
        names: set[str] = set()
        valid = []
        for r in run:
            if r.name in names or self.store.find_user(r.name, entry.real) is not None:
                r.answer(error=UserExists())
                continue
            names.add(r.name)
            valid.append(r)
        return valid

    def _batch(self, entry, kind: str, reqs: list[_Request]) -> list:
        """One commit for `reqs` (one kind; no name twice among mods); per request the record, or
        the exception it alone would have raised."""
        store = self.store
        if kind == ADD:
            return store.add_users(entry.real, [r.payload for r in reqs], prepared=True)
        if kind == MOD:
            from ..store.store import _umask_mode

            changes = {r.name: r.payload for r in reqs}
            got = {u.name: u for u in store.auth.modify_users(entry, changes, _umask_mode(), True,
                                                             maildirsize=reqs[0].maildirsize)}
            return [got.get(r.name) or UserNotFound() for r in reqs]
        gone: dict[str, object] = {}
        for u in store.auth.delete_users(entry, [r.name for r in reqs]):
            gone.setdefault(u.name, u)
        return [gone.pop(r.name, None) or UserNotFound() for r in reqs]


def _answer(r: _Request, res) -> None:
    if isinstance(res, BaseException):
        r.answer(error=res)
    else:
        r.answer(res)


def _runs(batch: list[_Request]) -> list[list[_Request]]:
    """The batch as runs of one kind, each one commit.  The requests of a batch are concurrent (a
    session has one at a time in flight), so any order of them is one the clients could have
    seen; a request joins the first run of its kind after every run holding a request for the
    same user, so two requests naming one user keep their arrival order.  A mod run keeps one
    maildirsize setting and names each user once."""
    runs: list[list[_Request]] = []
    names: list[set[str]] = []
    for r in batch:
        lower = max((i + 1 for i, ns in enumerate(names) if r.name in ns), default=0)
        for k in range(lower, len(runs)):
            if runs[k][0].kind == r.kind and (r.kind != MOD or runs[k][0].maildirsize == r.maildirsize):
                runs[k].append(r)
                names[k].add(r.name)
                break
        else:
            runs.append([r])
            names.append({r.name})
    return runs
