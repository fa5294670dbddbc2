"""`vcli vmoddomlimits`, `vcli vdeloldusers`, `vcli vpopbull`: long options onto vcli.cli.domtools."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer

from ..errors import UsageError
from . import domtools as DT
from .app import DryRunOpt, Format, FormatOpt, _done, _emit_rows, _global, _lines, _store, app
from .common import print_lines


@app.command("vmoddomlimits")
def vmoddomlimits(
    domain: Annotated[str | None, typer.Argument(help="The domain (not with --default)")] = None,
    default: Annotated[bool, typer.Option("--default", "-d", help="Work on etc/vlimits.default instead.")] = False,
    show: Annotated[bool, typer.Option("--show", "-S", help="Show the limits (after any change given).")] = False,
    delete: Annotated[bool, typer.Option("--delete", "-D", help="Delete the domain's own limits: back to "
                                                                "vlimits.default.")] = False,
    quota: Annotated[str | None, typer.Option("--quota", "-Q", metavar="MB", help="Domain disk quota in MB.")] = None,
    default_quota: Annotated[str | None, typer.Option("--default-quota", "-q", metavar="QUOTA",
                                                      help="Default quota of new users (10485760, 10M).")] = None,
    max_msgcount: Annotated[str | None, typer.Option(metavar="COUNT", help="Domain max message count (-M).")] = None,
    default_maxmsgcount: Annotated[str | None, typer.Option(metavar="COUNT", help="Default max message count of new users (-m).")] = None,
    max_popaccounts: Annotated[str | None, typer.Option(metavar="COUNT", help="Max POP accounts, -1 unlimited (-P).")] = None,
    max_aliases: Annotated[str | None, typer.Option(metavar="COUNT", help="Max aliases, -1 unlimited (-A).")] = None,
    max_forwards: Annotated[str | None, typer.Option(metavar="COUNT", help="Max forwards, -1 unlimited (-F).")] = None,
    max_autoresponders: Annotated[str | None, typer.Option(metavar="COUNT", help="Max autoresponders, -1 unlimited (-R).")] = None,
    max_mailinglists: Annotated[str | None, typer.Option(metavar="COUNT", help="Max mailing lists, -1 unlimited (-L).")] = None,
    flags: Annotated[str | None, typer.Option("--flags", "-g", metavar="LETTERS",
                                              help="Domain-wide disable flags, replacing the old ones: "
                                                   "u d p s w i r c x m (see vmoddomlimits(1)).")] = None,
    perm_account: Annotated[str | None, typer.Option(metavar="LETTERS", help="Admin rights on POP accounts: letters a c m d (-p).")] = None,
    perm_alias: Annotated[str | None, typer.Option(metavar="LETTERS", help="Admin rights on aliases (-a).")] = None,
    perm_forward: Annotated[str | None, typer.Option(metavar="LETTERS", help="Admin rights on forwards (-f).")] = None,
    perm_autoresponder: Annotated[str | None, typer.Option(metavar="LETTERS", help="Admin rights on autoresponders (-r).")] = None,
    perm_maillist: Annotated[str | None, typer.Option(metavar="LETTERS", help="Admin rights on mailing lists (-l).")] = None,
    perm_maillist_users: Annotated[str | None, typer.Option(metavar="LETTERS", help="Admin rights on mailing list users (-u).")] = None,
    perm_maillist_moderators: Annotated[str | None, typer.Option(metavar="LETTERS", help="Admin rights on mailing list moderators (-o).")] = None,
    perm_quota: Annotated[str | None, typer.Option(metavar="LETTERS", help="Admin rights on quotas (-x).")] = None,
    perm_defaultquota: Annotated[str | None, typer.Option(metavar="LETTERS", help="Admin rights on the default quota (-z).")] = None,
    fmt: FormatOpt = Format.plain,
    dry_run: DryRunOpt = False,
):
    """Show or set a domain's limits and default quotas (vmoddomlimits).

    Counts take -1 for unlimited; --perm-* take letters a (deny all), c (create), m (modify),
    d (delete) for domain admins other than postmaster; an empty value clears them."""
    ch = DT.LimitChanges(default_quota=default_quota, gid_flags=flags)
    for key, value in (("maxpopaccounts", max_popaccounts), ("maxaliases", max_aliases),
                       ("maxforwards", max_forwards), ("maxautoresponders", max_autoresponders),
                       ("maxmailinglists", max_mailinglists)):
        if value is not None:
            ch.counts[key] = value
    for key, value in (("quota", quota), ("maxmsgcount", max_msgcount), ("default_maxmsgcount", default_maxmsgcount)):
        if value is not None:
            ch.sizes[key] = value
    for key, value in (("perm_account", perm_account), ("perm_alias", perm_alias), ("perm_forward", perm_forward),
                       ("perm_autoresponder", perm_autoresponder), ("perm_maillist", perm_maillist),
                       ("perm_maillist_users", perm_maillist_users),
                       ("perm_maillist_moderators", perm_maillist_moderators), ("perm_quota", perm_quota),
                       ("perm_defaultquota", perm_defaultquota)):
        if value is not None:
            ch.perms[key] = value

    def body():
        if default == (domain is not None):
            raise UsageError("give a domain, or --default for vlimits.default")
        if delete and default:
            raise UsageError("the default limits cannot be deleted")
        if delete and not ch.empty():
            raise UsageError("--delete takes no setting options")
        store = _store()
        dom = domain.lower() if domain else None
        if delete:
            _lines(DT.del_limits(store, dom))
            return
        if not ch.empty():
            DT.mod_limits(store, dom, ch)
        if show or ch.empty():
            if dry_run and not ch.empty():
                return  # nothing was written, so there is nothing new to show
            lim = DT.read_default_limits(store) if default else DT.domain_limits(store, dom)
            name = store.default_limits_path() if default else dom
            if fmt is Format.plain:
                header = f"Default limits: {name}" if default else f"Domain: {name}"
                _lines(DT.limits_show_lines(lim, header))
            elif fmt is Format.json:
                import json

                sys.stdout.write(json.dumps(DT.limits_dict(lim, name), indent=2) + "\n")
            else:
                row = DT.limits_dict(lim, name)
                _emit_rows([row], fmt, list(row))

    _done(body, dry_run)


@app.command("vdeloldusers")
def vdeloldusers(
    domain: Annotated[str | None, typer.Option("--domain", "-d", help="Look at this domain only.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-e", help="Look at every domain.")] = False,
    age: Annotated[int | None, typer.Option("--age", "-a", metavar="DAYS", min=0,
                                            help="Last login older than DAYS (default 180).")] = None,
    weeks: Annotated[int | None, typer.Option("--weeks", metavar="WEEKS", min=0,
                                              help="The same, in weeks.")] = None,
    exclude: Annotated[str | None, typer.Option("--exclude", "-x", metavar="FILE",
                                                help="Addresses to keep, one a line.")] = None,
    delete: Annotated[bool, typer.Option("--delete", "-D", help="Delete them (otherwise only list).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-V", help="Also say who was skipped and why.")] = False,
    fmt: FormatOpt = Format.plain,
    dry_run: DryRunOpt = False,
):
    """List, or with --delete remove, users who have not logged in for a while (vdeloldusers).

    The last login is the time of the user's lastauth file (vadduser writes it, each login
    renews it); users without one, postmaster and the catch-all mailbox are never chosen."""

    def body():
        if (domain is None) == (not all_):
            raise UsageError("give --domain DOMAIN or --all")
        if age is not None and weeks is not None:
            raise UsageError("give --age or --weeks, not both")
        days = age if age is not None else weeks * 7 if weeks is not None else DT.DEFAULT_AGE_DAYS
        store = _store()
        notes: list[str] = []
        found = DT.old_users(store, domain, days, DT.load_exclude(exclude), notes.append)
        if delete:
            DT.delete_old(store, found)
        if verbose:
            for m in notes:
                print(m, file=sys.stderr)
        if fmt is Format.plain:
            _lines([u.address for u in found])
        else:
            rows = [{"address": u.address, "lastauth": datetime.fromtimestamp(u.lastauth, UTC)
                     .strftime("%Y-%m-%dT%H:%M:%SZ"), "deleted": delete and not dry_run} for u in found]
            _emit_rows(rows, fmt, ["address", "lastauth", "deleted"])
        if not _global.get("quiet"):
            what = "deleted" if delete and not dry_run else "found (use --delete to delete)"
            print(f"{len(found)} old users {what}", file=sys.stderr)

    _done(body, dry_run)


class Method(StrEnum):
    copy = "copy"
    hard = "hard"
    symbolic = "symbolic"


@app.command("vpopbull")
def vpopbull(
    domains: Annotated[list[str] | None, typer.Argument(help="Domains (default: every real domain)")] = None,
    file: Annotated[str | None, typer.Option("--file", "-f", metavar="FILE", help="The message.")] = None,
    exclude: Annotated[str | None, typer.Option("--exclude", "-e", metavar="FILE",
                                                help="Addresses to leave out, one a line.")] = None,
    list_only: Annotated[bool, typer.Option("--list", "-n", help="Deliver nothing; list the addresses.")] = False,
    method: Annotated[Method, typer.Option("--method", help="copy (adds To: and Date:), hard (link) or "
                                                            "symbolic (link) to FILE.")] = Method.copy,
    verbose: Annotated[bool, typer.Option("--verbose", "-V", help="List the addresses delivered to.")] = False,
    fmt: FormatOpt = Format.plain,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Deliver nothing; show who would get it and who "
                                                            "is over quota.")] = False,
):
    """Deliver a bulletin into the Maildir of every user of the domains (vpopbull)."""

    def body():
        if file is None and not list_only:
            raise UsageError("--file is required (or --list)")
        bull = DT.load_bulletin(file, method.value) if file is not None else None
        store = _store()
        notes: list[str] = []
        res = DT.vpopbull(store, bull, list(domains or []), DT.load_exclude(exclude), list_only,
                          note=notes.append, dry_run=dry_run)
        if verbose:
            for m in notes:
                print(m, file=sys.stderr)
        if fmt is Format.plain:
            if list_only:
                print_lines(res.listed)
            elif verbose or dry_run:
                print_lines(res.delivered)
            for a in res.over_quota:
                print(f"{a}: over quota, not delivered", file=sys.stderr)
        else:
            state = "would deliver" if dry_run else "delivered"
            rows = ([{"address": a, "status": "listed"} for a in res.listed]
                    + [{"address": a, "status": state} for a in res.delivered]
                    + [{"address": a, "status": "over quota"} for a in res.over_quota])
            _emit_rows(rows, fmt, ["address", "status"])
        for line in res.failed:
            print(line, file=sys.stderr)
        return 74 if res.failed else 0

    _done(body)
