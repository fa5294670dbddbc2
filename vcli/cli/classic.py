"""The classic vpopmail command names, taking the classic arguments.

Each entry point parses argv getopt-style (as glibc does, options may follow the
address) and calls the same actions as `vcli` (actions.py).  They print what the
C tools print on success, byte for byte; deliberate differences (errors on
stderr, non-zero exit where vpopmail exits 0 on failure) are listed in the README.
This module must not import typer: cron loops pay its start-up on every call.
"""

from __future__ import annotations

import sys

from .. import flags as F
from ..errors import UsageError
from . import actions as A
from . import usage as U
from .common import (
    VERSION,
    emit_now,
    guard_std_fds,
    leave_now,
    open_store,
    print_lines,
    read_password,
    run,
    warn,
)


class Getopt:
    """POSIX getopt with glibc's argument permutation and optional (`::`) arguments."""

    def __init__(self, prog: str, optstring: str, on_unknown: str = "stop"):
        self.prog, self.on_unknown = prog, on_unknown
        self.spec: dict[str, int] = {}
        i = 0
        while i < len(optstring):
            ch = optstring[i]
            n = 0
            while i + 1 + n < len(optstring) and optstring[i + 1 + n] == ":" and n < 2:
                n += 1
            self.spec[ch] = n  # 0 none, 1 required, 2 optional (attached only)
            i += 1 + n

    def parse(self, argv: list[str]) -> tuple[list[tuple[str, str | None]], list[str], bool]:
        """(options, positionals, bad): bad is True when an unknown option was met."""
        opts: list[tuple[str, str | None]] = []
        pos: list[str] = []
        bad = False
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if arg == "--":
                pos.extend(argv[i:])
                break
            if not arg.startswith("-") or arg == "-":
                pos.append(arg)
                continue
            j = 1
            while j < len(arg):
                ch = arg[j]
                j += 1
                kind = self.spec.get(ch)
                if kind is None:
                    print(f"{self.prog}: invalid option -- '{ch}'", file=sys.stderr)
                    bad = True
                    if self.on_unknown == "ignore":
                        continue
                    pos.extend(argv[i:])
                    return opts, pos, bad
                if kind == 0:
                    opts.append((ch, None))
                elif kind == 2:
                    opts.append((ch, arg[j:] or None))
                    break
                else:
                    if j < len(arg):
                        opts.append((ch, arg[j:]))
                    elif i < len(argv):
                        opts.append((ch, argv[i]))
                        i += 1
                    else:
                        print(f"{self.prog}: option requires an argument -- '{ch}'", file=sys.stderr)
                        bad = True
                        if self.on_unknown != "ignore":
                            return opts, pos, bad
                    break
        return opts, pos, bad


# getopt strings of the classic tools (also read by the completion generator)
OPTSTRINGS = {
    "vadduser": "svc:q:e:r::",
    "vdeluser": "v",
    "vmoduser": "D:vnxc:q:e:C:h" + "".join(f.letter for f in F.FLAGS),
    "vuserinfo": "anpugcdqQvlD:C",
    "vpasswd": "vr::",
    "vsetuserquota": "v",
    "vadddomain": "q:be:u:vi:g:d:Or::",
    "vdeldomain": "vf",
    "vdominfo": "vanugdtr",
    "valias": "vnsdi:",
    "vaddaliasdomain": "v",
    "vmoddomlimits": "vSDdQ:q:M:m:P:A:F:R:L:g:p:a:f:r:l:u:o:x:z:h",  # vcli.cli.domtools
    "vdeloldusers": "vVDd:a:e",
    "vpopbull": "Vvcshnf:e:",
}
# what each tool's positional arguments name: address, domain, or target (either)
ARGUMENTS = {
    "vadduser": "address", "vdeluser": "address", "vmoduser": "target", "vuserinfo": "address",
    "vpasswd": "address", "vsetuserquota": "target", "vadddomain": "none", "vdeldomain": "domain",
    "vdominfo": "domain", "valias": "target", "vaddaliasdomain": "domain",
    "vmoddomlimits": "domain", "vdeloldusers": "none", "vpopbull": "domain",
}


def _usage_exit(text: str, code: int = 255) -> int:
    """Usage on a command-line error: stderr (vpopmail: stdout), non-zero exit."""
    sys.stderr.write(text)
    return code


def _version(opts) -> None:
    if any(o == "v" for o, _ in opts):
        print(f"version: {VERSION}")


def _print(lines: list[str]) -> None:
    print_lines(lines)


def _no_r_with_password(opts: dict, pos: list[str]) -> None:
    if "r" in opts and len(pos) > 1:
        raise A.ClassicError("don't use -r option when giving password on command line", 255)


def vadduser_main(argv: list[str]) -> int:
    opts, pos, _ = Getopt("vadduser", OPTSTRINGS["vadduser"]).parse(argv)
    _version(opts)
    if not pos:
        return _usage_exit(U.VADDUSER)
    o = dict(opts)
    _no_r_with_password(o, pos)
    if "s" in o:
        warn("Warning: The -s option has been disabled.")
    rand = A.random_length(o["r"]) if "r" in o else None
    _print(A.add_user(open_store(), pos[0], pos[1] if len(pos) > 1 else None, hashed=o.get("e"),
                      gecos=o.get("c"), quota=o.get("q"), random_len=rand, ask_password=read_password,
                      show=emit_now))
    return 0


def vdeluser_main(argv: list[str]) -> int:
    opts, pos, _ = Getopt("vdeluser", OPTSTRINGS["vdeluser"]).parse(argv)
    _version(opts)
    if not pos:
        return _usage_exit(U.VDELUSER)
    A.del_user(open_store(), pos[0])
    return 0




def vmoduser_main(argv: list[str]) -> int:
    from ..model import UserChanges

    opts, pos, _ = Getopt("vmoduser", OPTSTRINGS["vmoduser"], on_unknown="ignore").parse(argv)
    _version(opts)
    letters = [o for o, _ in opts]
    if "h" in letters:
        sys.stdout.write(U.VMODUSER)
        return 0
    if not pos:
        return _usage_exit(U.VMODUSER)
    o = {k: v if k == "q" else A.no_empty(v) for k, v in opts}  # an empty -c/-e/-C/-D is not given, as in vmoduser
    if o.get("e") is not None:
        A.check_hash_text(o["e"])
    ch = UserChanges(gecos=o.get("c"), hashed=o.get("e"), quota=o.get("q"), dir=o.get("D"),
                     clear_flags="x" in letters, set_flags=A.flag_changes(letters, warn))
    if o.get("C") is not None:
        ch.password, ch.hashed = o["C"], None
    A.mod_user(open_store(), pos[0], ch, rebuild_cdb="n" not in letters)
    return 0


def vuserinfo_main(argv: list[str]) -> int:
    opts, pos, bad = Getopt("vuserinfo", OPTSTRINGS["vuserinfo"], on_unknown="usage").parse(argv)
    if bad:
        return _usage_exit(U.VUSERINFO)
    _version(opts)
    letters = [o for o, _ in opts]
    selectors = "" if "a" in letters else "".join(x for x in letters if x in "npCugcdqQl")
    domain = dict(opts).get("D")
    if domain is None and not pos:
        return _usage_exit(U.VUSERINFO)
    store = open_store()
    try:
        _print(A.user_info_lines(store, pos[0] if pos else None, domain, selectors))
    finally:
        store.close()
    return 0


def vpasswd_main(argv: list[str]) -> int:
    opts, pos, _ = Getopt("vpasswd", OPTSTRINGS["vpasswd"]).parse(argv)
    _version(opts)
    if not pos:
        return _usage_exit(U.VPASSWD)
    o = dict(opts)
    _no_r_with_password(o, pos)
    rand = A.random_length(o["r"]) if "r" in o else None
    _print(A.set_password(open_store(), pos[0], pos[1] if len(pos) > 1 else None, rand, ask_password=read_password,
                          show=emit_now))
    return 0


def vsetuserquota_main(argv: list[str]) -> int:
    opts, pos, _ = Getopt("vsetuserquota", OPTSTRINGS["vsetuserquota"]).parse(argv)
    _version(opts)
    if len(pos) < 2:
        return _usage_exit(U.VSETUSERQUOTA)
    A.set_quota(open_store(), pos[0], pos[1])
    return 0


def vadddomain_main(argv: list[str]) -> int:
    opts, pos, _ = Getopt("vadddomain", OPTSTRINGS["vadddomain"]).parse(argv)
    _version(opts)
    if not pos:
        return _usage_exit(U.VADDDOMAIN)
    o = dict(opts)
    _no_r_with_password(o, pos)
    dopts = A.DomainOptions(quota=o.get("q"), catchall=o.get("e"), user=o.get("u"), base_dir=o.get("d"),
                            uid=o.get("i"), gid=o.get("g"), optimize="O" in o)
    rand = A.random_length(o["r"]) if "r" in o else None
    _print(A.add_domain(open_store(), pos[0], pos[1] if len(pos) > 1 else None, dopts, rand,
                        ask_password=lambda who: read_password(who), show=emit_now))
    return 0


def vdeldomain_main(argv: list[str]) -> int:
    opts, pos, _ = Getopt("vdeldomain", OPTSTRINGS["vdeldomain"]).parse(argv)
    _version(opts)
    if not pos:
        return _usage_exit(U.VDELDOMAIN)
    _print(A.del_domain(open_store(), pos[0], force=any(o == "f" for o, _ in opts)))
    return 0


def vdominfo_main(argv: list[str]) -> int:
    opts, pos, bad = Getopt("vdominfo", OPTSTRINGS["vdominfo"], on_unknown="usage").parse(argv)
    if bad:
        return _usage_exit(U.VDOMINFO)
    _version(opts)
    letters = [o for o, _ in opts]
    selectors = "" if "a" in letters else "".join(x for x in letters if x in "nugdtr")
    store = open_store()
    try:
        _print(A.dom_info_lines(store, pos[0] if pos else None, selectors))
    finally:
        store.close()
    return 0


def valias_main(argv: list[str]) -> int:
    opts, pos, bad = Getopt("valias", OPTSTRINGS["valias"], on_unknown="usage").parse(argv)
    if bad:
        return _usage_exit(U.VALIAS, 254)
    _version(opts)
    action, line = "s", None
    for o, a in opts:
        if o in "nsdi":
            action, line = o, a if o == "i" else line
    if not pos:
        warn("must supply alias email address")
        return _usage_exit(U.VALIAS)
    store = open_store()
    if action == "n":
        _print(A.alias_names(store, pos[0]))
    elif action == "i":
        A.alias_insert(store, pos[0], line or "")
    elif action == "d":
        A.alias_delete(store, pos[0])
    else:
        _print([f"{a}@{d} -> {x}" for a, d, x in A.alias_listing(store, pos[0])])
    return 0


def vaddaliasdomain_main(argv: list[str]) -> int:
    opts, pos, _ = Getopt("vaddaliasdomain", OPTSTRINGS["vaddaliasdomain"]).parse(argv)
    _version(opts)
    if len(pos) < 2:
        return _usage_exit(U.VADDALIASDOMAIN)
    A.add_alias_domain(open_store(), pos[0], pos[1])
    return 0


# --- entry points ---------------------------------------------------------------


def _classic_status(fn):
    """A bad command line found below the parser (e.g. `-i abc`) exits 255 here, as the classic
    tools do for every usage error (the vcli subcommands: 64)."""

    def main(argv: list[str]) -> int:
        try:
            return fn(argv)
        except UsageError as exc:
            raise A.ClassicError(exc.message, 255) from None

    main.__name__ = fn.__name__
    return main


MAINS = {
    "vadduser": vadduser_main,
    "vdeluser": vdeluser_main,
    "vmoduser": vmoduser_main,
    "vuserinfo": vuserinfo_main,
    "vpasswd": vpasswd_main,
    "vsetuserquota": vsetuserquota_main,
    "vadddomain": vadddomain_main,
    "vdeldomain": vdeldomain_main,
    "vdominfo": vdominfo_main,
    "valias": valias_main,
    "vaddaliasdomain": vaddaliasdomain_main,
}
MAINS = {name: _classic_status(fn) for name, fn in MAINS.items()}


# commands that change nothing and close what they opened: they leave without the interpreter's
# teardown (see common.leave_now)
READ_ONLY = frozenset({"vuserinfo", "vdominfo"})


def _entry(name: str):
    def main(argv: list[str] | None = None) -> None:
        args = sys.argv[1:] if argv is None else argv
        guard_std_fds()
        code = run(lambda: MAINS[name](args))
        if name in READ_ONLY and argv is None:
            leave_now(code)
        sys.exit(code)

    main.__name__ = name
    return main


vadduser = _entry("vadduser")
vdeluser = _entry("vdeluser")
vmoduser = _entry("vmoduser")
vuserinfo = _entry("vuserinfo")
vpasswd = _entry("vpasswd")
vsetuserquota = _entry("vsetuserquota")
vadddomain = _entry("vadddomain")
vdeldomain = _entry("vdeldomain")
vdominfo = _entry("vdominfo")
valias = _entry("valias")
vaddaliasdomain = _entry("vaddaliasdomain")
