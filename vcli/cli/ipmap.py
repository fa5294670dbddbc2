"""vipmap (issue 12 item 6): show, add and delete the IP -> domain map of IP_ALIAS_DOMAINS builds.

The classic arguments (`-p` print, the default; `-a ip domain`; `-d ip domain`; `-v`), the C
tool's output (`IP DOMAIN` lines); errors as one stderr line and exit 255, where the C tool
says nothing and exits 0.  No typer here (see classic.py).
"""

from __future__ import annotations

import sys

from ..errors import IpAliasDomainsOff
from .classic import Getopt, _classic_status, _usage_exit, _version
from .common import guard_std_fds, open_store, print_lines, run

OPTSTRINGS = {"vipmap": "vpsda"}
ARGUMENTS = {"vipmap": "none"}
PURPOSE = {"vipmap": "show, add and delete IP address to domain mappings (ip alias domains)"}
USAGE = {"vipmap": """\
vipmap: usage: [options] ip domain
options: -d delete mapping
         -a add mapping
         -p print mapping
         -s show mapping (the same as -p)
         -v show version
"""}


def _check_built(store) -> None:
    """A local store answers for the site's build setting; a remote one for its daemon's."""
    if not getattr(store, "is_remote", False) and not store.s.ip_alias_domains:
        raise IpAliasDomainsOff()


def show(store) -> list[str]:
    _check_built(store)
    return [f"{ip} {domain}" for ip, domain in store.ip_maps()]


def add(store, ip: str, domain: str) -> None:
    _check_built(store)
    store.add_ip_map(ip, domain)


def delete(store, ip: str, domain: str) -> None:
    _check_built(store)
    store.del_ip_map(ip, domain)


def vipmap_main(argv: list[str]) -> int:
    opts, pos, bad = Getopt("vipmap", OPTSTRINGS["vipmap"]).parse(argv)
    if bad or not argv:
        return _usage_exit(USAGE["vipmap"])
    action = "p"
    for o, _ in opts:  # the last of -p/-s/-a/-d wins, as with the C tool
        if o in "psad":
            action = "p" if o == "s" else o
    _version(opts)
    if action in "ad" and len(pos) < 2:
        return _usage_exit(USAGE["vipmap"])
    store = open_store()
    if action == "a":
        add(store, pos[0], pos[1])
    elif action == "d":
        delete(store, pos[0], pos[1])
    else:
        print_lines(show(store))
    return 0


MAINS = {"vipmap": _classic_status(vipmap_main)}


def vipmap(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    guard_std_fds()
    sys.exit(run(lambda: MAINS["vipmap"](args)))
