"""Dynamic shell-completion candidates: domain names, and user@domain after the '@'.

The completion scripts answer commands, options and flag letters themselves and
call this (console script `vcli-complete`) only for names from the store, so a
TAB costs one lean process: no typer, one read of users/assign, and for users
one read of the domain's vpasswd.

    vcli-complete domains PREFIX      domain names starting with PREFIX
    vcli-complete addresses WORD      'user@dom…' -> user@<domains>; 'user@domain' -> users of it
"""

from __future__ import annotations

import os
import sys


def _settings(argv: list[str]):
    from ..config import load_settings

    over = {}
    for opt, key in (("--vpopmail-dir", "vpopmail_dir"), ("--qmail-dir", "qmail_dir")):
        if opt in argv:
            i = argv.index(opt)
            if i + 1 < len(argv):
                over[key] = argv[i + 1]
    return load_settings(over, announce=lambda m: None)


def domains(settings, prefix: str) -> list[str]:
    from ..store.qmail import QmailFiles

    prefix = prefix.lower()
    return sorted(e.name for e in QmailFiles(settings.qmail_dir).assign_entries() if e.name.startswith(prefix))


def addresses(settings, word: str) -> list[str]:
    if "@" not in word:
        return []
    user, _, dpart = word.partition("@")
    doms = domains(settings, dpart)
    out = [f"{user}@{d}" for d in doms]
    if dpart.lower() in doms:
        from ..store.qmail import QmailFiles

        entry = QmailFiles(settings.qmail_dir).lookup(dpart.lower())
        if entry is not None:
            try:
                with open(os.path.join(entry.dir, "vpasswd"), "rb") as f:
                    names = [line.split(b":", 1)[0].decode("utf-8", "replace") for line in f]
            except OSError:
                names = []
            out = [f"{n}@{dpart.lower()}" for n in names if n.startswith(user.lower())] or out
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 1 or args[0] not in ("domains", "addresses"):
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        return 64
    word = args[1] if len(args) > 1 else ""
    try:
        settings = _settings(args[2:])
        found = domains(settings, word) if args[0] == "domains" else addresses(settings, word)
    except Exception:  # noqa: BLE001 - a TAB must never print a traceback
        return 0
    sys.stdout.write("".join(x + "\n" for x in found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
