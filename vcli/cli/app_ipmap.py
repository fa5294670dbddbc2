"""`vcli vipmap`: long options onto vcli.cli.ipmap (show by default, --add / --delete IP DOMAIN)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from . import ipmap as IP
from .app import DryRunOpt, Format, FormatOpt, _done, _emit_rows, _lines, _store, app


@app.command("vipmap")
def vipmap(
    ip: Annotated[str | None, typer.Argument(help="The IP address (IPv4 or IPv6), with --add/--delete.")] = None,
    domain: Annotated[str | None, typer.Argument(help="The domain it stands for, with --add/--delete.")] = None,
    show: Annotated[bool, typer.Option("--show", "-s", help="List the mappings (the default).")] = False,
    add: Annotated[bool, typer.Option("--add", "-a", help="Map IP to DOMAIN (an existing domain).")] = False,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Remove the mapping of IP to DOMAIN.")] = False,
    fmt: FormatOpt = Format.plain,
    dry_run: DryRunOpt = False,
):
    """Show, add and delete the IP address -> domain map of ip alias domain builds (vipmap)."""

    def body():
        if add + delete + show > 1:
            raise UsageError("give one of --show, --add, --delete")
        if (add or delete) and not (ip and domain):
            raise UsageError("--add and --delete need IP and DOMAIN")
        if not (add or delete) and ip is not None:
            raise UsageError("IP and DOMAIN go with --add or --delete")
        store = _store()
        if add:
            IP.add(store, ip, domain)
        elif delete:
            IP.delete(store, ip, domain)
        elif fmt is Format.plain:
            _lines(IP.show(store))
        else:
            IP._check_built(store)
            _emit_rows([{"ip": i, "domain": d} for i, d in store.ip_maps()], fmt, ["ip", "domain"])

    _done(body, dry_run)
