"""`vcli convert --to mysql|pgsql|cdb [DOMAIN ...]`: vpopmail's vconvert (vcli/store/convert.py)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from .app import _done, _global, _store, app


class Module(StrEnum):
    mysql = "mysql"
    pgsql = "pgsql"
    cdb = "cdb"


C_TOOLS_NOTE = ("Note: vpopmail's own tools (vchkpw, vdelivermail, qmailadmin, the C vadduser...) keep "
                "the module they were built with ({header}); vcli cannot rebuild them: rebuild vpopmail "
                "with --enable-auth-module={module} (and the same other options) before they use it.")


@app.command("convert", epilog="Exit status: 0 copied and verified (switched, or not yet when other domains "
                               "still differ: it says so); 65 a copied domain did not verify (nothing "
                               "switched); 64 bad usage; 78 a bad config or connection file; the target's "
                               "own errors (a database that is down or refuses the login) with their status.")
def convert(
    to: Annotated[Module, typer.Option("--to", help="The auth module to move the users to.")],
    domains: Annotated[list[str] | None, typer.Argument(help="Convert only these domains (default: every "
                                                             "domain). The switch waits until every domain "
                                                             "is in the target.")] = None,
    db_file: Annotated[str | None, typer.Option("--db-file", help="The target's connection file "
                                                "(host|port|user|password|database lines; default: the "
                                                "site's etc/vpopmail.mysql or vpopmail.pgsql); recorded "
                                                "in the config file as db_file.")] = None,
):
    """Copy every user (records, dir-control counters, lastauth) from the site's auth module to
    another, verify them record for record, and only then switch vcli's config file to it.

    Interrupted at any point the old module stays in force; run it again to finish (what a half
    run left in the target is replaced). Mailboxes and qmail's files are shared by every module
    and stay as they are. Only vcli is switched: vpopmail's C tools follow their own build
    (include/vpopmail_config.h) until vpopmail is rebuilt for the new module.
    """

    def body():
        import os
        import sys

        from ..config import config_paths, load_settings
        from ..configfile import set_values
        from ..errors import ConfigError, UsageError
        from ..store.convert import convert as run_convert
        from ..store.convert import open_target
        from .progress import Progress

        store = _store()
        if getattr(store, "is_remote", False):
            raise UsageError("convert works on a local store only: run it on the mail server")
        path = db_file and os.path.abspath(db_file)
        if path and to is Module.cdb:
            raise UsageError("--db-file goes with --to mysql or --to pgsql")
        where = store.s.sources.get("auth_module", "")
        if where.startswith("env "):
            raise UsageError(f"{where[4:]} is set in this environment and would override the switch: unset it")
        target = open_target(store, to.value, path)
        config_file = store.s.config_file or config_paths()[0]
        bars: list[Progress] = []

        def progress_for(domain: str, total: int):
            p = Progress(f"{domain}: copying", total, enabled=sys.stderr.isatty() and not _global.get("quiet"))
            bars.append(p)

            def tick(n: int) -> None:
                p(n)
                if n >= total:
                    p.done()

            return tick

        def switch() -> None:
            values = {"auth_module": to.value}
            if path:
                values["db_file"] = path
            set_values(config_file, values)
            s = load_settings({"vpopmail_dir": _global.get("vpopmail_dir"),
                               "qmail_dir": _global.get("qmail_dir")}, announce=lambda m: None)
            if s.auth_module != to.value:
                raise ConfigError(f"wrote auth_module = \"{to.value}\" to {config_file}, but "
                                  f"{s.sources.get('auth_module')} still says {s.auth_module}")

        def say(line: str) -> None:
            print(line, flush=True)  # each domain as it is done, also into a pipe

        switched = run_convert(store, target, domains or None, switch, say, progress_for)
        for p in bars:
            p.done()
        if switched:
            print(f"switched: vcli now uses the {to.value} module (auth_module = \"{to.value}\" in {config_file})")
            header = store.s.site_file or os.path.join(store.s.vpopmail_dir, "include", "vpopmail_config.h")
            print(C_TOOLS_NOTE.format(header=header, module=to.value))
        return 0

    _done(body)
