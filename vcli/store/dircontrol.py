"""vpopmail's hashed-directory counter `.dir-control` (spec/store.md §6).

The first 99 entries live directly in the parent, then 100 each in `0/` ... `z/`,
then `0/0/` and so on.  The state and its quirks (the off-by-one index, the
`mod` line that reads back as `0 2 2`) are reproduced so that vpopmail and vcli
can take turns on the same domain.
"""

from __future__ import annotations

import os

from ..record import factory, record

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@record
class DirControl:
    cur_users: int = 0
    level_cur: int = 0
    level_max: int = 3
    start: list[int] = factory(lambda: [0, 0, 0])
    end: list[int] = factory(lambda: [61, 61, 61])
    mod: list[int] = factory(lambda: [0, 2, 4])
    index: list[int] = factory(lambda: [0, 0, 0])
    the_dir: str = ""

    @classmethod
    def parse(cls, data: bytes | None) -> DirControl:
        """State from file bytes; None (missing file) gives vpopmail's defaults."""
        if data is None:
            return cls()
        lines = data.decode("ascii", "replace").split("\n")

        def ints(i: int) -> list[int]:
            vals = [_atoi(x) for x in (lines[i].split() if i < len(lines) else [])]
            return (vals + [0, 0, 0])[:3]

        state = cls(
            cur_users=_atoi(lines[0]) if lines else 0,
            level_cur=_atoi(lines[1]) if len(lines) > 1 else 0,
            level_max=_atoi(lines[2]) if len(lines) > 2 else 3,
            start=ints(3),
            end=ints(4),
            mod=ints(5),
            index=ints(6),
        )
        # vpopmail's reader stores the third mod value over the second's slot, so a
        # re-read file always has mod2 == mod1 (the "0 2 2" quirk).
        state.mod[2] = state.mod[1]
        # the_dir is the 8th line, or the 9th when one exists.
        if len(lines) > 9 and lines[8]:
            state.the_dir = lines[8]
        elif len(lines) > 7:
            state.the_dir = lines[7]
        return state

    def dump(self) -> bytes:
        return (
            f"{self.cur_users}\n{self.level_cur}\n{self.level_max}\n"
            f"{_ints(self.start)}\n{_ints(self.end)}\n{_ints(self.mod)}\n{_ints(self.index)}\n"
            f"{self.the_dir}\n"
        ).encode("ascii")

    def next_dir(self) -> str:
        """Advance for one new entry and return its hash dir ('' = none)."""
        self.cur_users += 1
        if self.cur_users % 100 != 0:
            return self.the_dir
        if self.the_dir == "":
            self.the_dir = ALPHABET[self.start[0]]
            return self.the_dir
        lvl = self.level_cur
        if self.index[lvl] == self.end[lvl]:
            if lvl == 0:
                self._bump(0)
                self.level_cur = 1
                self.the_dir += "/"
            elif lvl == 1 and self.index[0] == self.end[0] and self.index[1] == self.end[1]:
                self._bump(1)
                self.level_cur = 2
                self.the_dir += "/"
        self._bump(self.level_cur)
        return self.the_dir

    def _bump(self, lvl: int) -> None:
        pos = self.mod[lvl]
        chars = list(self.the_dir)
        c = chars[pos] if pos < len(chars) else None
        if c == ALPHABET[self.end[lvl]]:
            chars[pos] = ALPHABET[self.start[lvl]]
            self.the_dir = "".join(chars)
            self.index[lvl] = self.start[lvl]
            if lvl > 0:
                self._bump(lvl - 1)
            return
        span = ALPHABET[self.start[lvl] : self.end[lvl] + 1]
        if c is None or c not in span:
            new = ALPHABET[self.start[lvl]]
        else:
            new = span[span.index(c) + 1]
        if pos < len(chars):
            chars[pos] = new
        else:
            chars.append(new)
        self.the_dir = "".join(chars)
        self.index[lvl] += 1

    def remove_one(self) -> None:
        """vdeluser/vdeldomain: the counter goes down, the hash position stays."""
        if self.cur_users > 0:
            self.cur_users -= 1


def _atoi(text: str) -> int:
    text = text.strip()
    sign = -1 if text.startswith("-") else 1
    digits = ""
    for ch in text.lstrip("+-"):
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def _ints(vals: list[int]) -> str:
    return " ".join(str(v) for v in vals)


def place_new_users(ddir: str, todo: list, dc: DirControl, free: list[str], default_quota: str,
                    uid_base: int, clear_passwords: bool) -> tuple[list, int]:
    """The records of new users and their homes, as vpopmail places them: a hashed dir from the
    free list first (vdeluser's leftovers), else the counter's next one.  `uid_base`: the pw_uid
    of a plain account (cdb 1, SQL 0; APOP adds one).  Returns (records, free dirs used); `dc`
    is advanced in place.  The same for every auth module, so one function."""
    from ..errors import TooLong
    from ..model import MAX_DIR, VUser

    created, used_free = [], 0
    for n in todo:
        if used_free < len(free):
            hash_dir = free[used_free]
            used_free += 1
            if dc.cur_users:
                dc.cur_users += 1
        else:
            hash_dir = dc.next_dir()
        home = os.path.join(os.path.join(ddir, hash_dir) if hash_dir else ddir, n.user)
        if len(home) > MAX_DIR:
            raise TooLong("dir too long (max=160)", -30)
        q = default_quota if n.quota is None else n.quota
        created.append(VUser(n.user, n.hashed or "", str(uid_base + bool(n.apop)), 0, n.gecos or n.user, home,
                             q, n.password if clear_passwords else None))
    return created, used_free
