"""`vcli` subcommands of the small tools (smalltools.py): the same functions, with long options,
`--format` on vusagec and `--dry-run` where something is written.  Registered on the app by app.py."""

from __future__ import annotations

from typing import Annotated

import typer

from . import smalltools as S
from .app import DryRunOpt, Format, FormatOpt, _done, _emit_rows, _lines, _password, _store, app


@app.command("vverifypw")
def vverifypw(
    address: Annotated[str, typer.Argument(help="user@domain")],
    password: Annotated[str | None, typer.Argument(help="The password (prefer the prompt or --password-file).")] = None,
    password_file: Annotated[str | None, typer.Option(help="Read the password from FILE's first line ('-' = stdin).")] = None,
    encrypted: Annotated[bool, typer.Option("--encrypted", "-e", help="The password given is the stored hash.")] = False,
):
    """Check a user's password: 'User authenticated.' and exit 0, else exit 255 (vverifypw)."""

    def body():
        pw = _password(password, password_file, address) or S._getpass("Enter password: ")
        store = _store()
        user, domain = store.parse_address(address)
        if not S.password_matches(store, user, domain, pw, encrypted=encrypted):
            raise S.A.ClassicError(S.AUTH_FAILED, 255)
        _lines(["User authenticated."])

    _done(body)


@app.command("vmkpasswd")
def vmkpasswd(domain: Annotated[str, typer.Argument(help="The domain.")], dry_run: DryRunOpt = False):
    """Rebuild a domain's vpasswd.cdb from its vpasswd (vmkpasswd)."""
    _done(lambda: S.rebuild_cdb(_store(), domain) and None, dry_run)


@app.command("vchangepw")
def vchangepw():
    """Change one's own password on a terminal: address, old password, new one twice (vchangepw)."""
    _done(lambda: S.MAINS["vchangepw"]([]))


@app.command("vrcptcheck")
def vrcptcheck(address: Annotated[str, typer.Argument(help="The recipient, user@domain.")]):
    """Does this recipient exist? Exit 0 yes, 1 no, 111 temporary problem (vrcptcheck, which reads fd 3)."""
    raise typer.Exit(S.check_recipient(address))


@app.command("vusagec")
def vusagec(
    entries: Annotated[list[str], typer.Argument(help="user@domain, or @domain for a whole domain.")],
    local: Annotated[bool, typer.Option("--local", help="Do not ask the usage daemon; read maildirsize.")] = False,
    fmt: FormatOpt = Format.plain,
):
    """Disk usage of users and domains: from the usage daemon of vusagec.conf, else maildirsize (vusagec)."""

    def body():
        rows = S.usage_rows(_store(), entries, use_daemon=not local)
        if fmt is Format.plain:
            _lines(S.usage_lines(rows))
        elif fmt is Format.json:
            import json
            import sys

            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        else:
            _emit_rows(rows, fmt, ["entry", "bytes", "files", "source"])

    _done(body)


@app.command("vmakedotqmail")
def vmakedotqmail(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Install the .qmail of this user@domain.")] = None,
    domain: Annotated[str | None, typer.Option("--domain", "-d", help="... of every user of this domain.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-A", help="... of every user of every domain.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", "-o", help="Replace existing .qmail files too.")] = False,
    reverse: Annotated[bool, typer.Option("--reverse", "-r", help="Remove the users' .qmail files instead.")] = False,
    qmail_default: Annotated[str | None, typer.Option("--qmail-default", "-q",
                                                      help="Rewrite .qmail-default of --domain or --all: 'default' "
                                                           "(vdelivermail, delete) or the line given.")] = None,
    testing: Annotated[bool, typer.Option("--testing", "-t", help="Report only, change nothing.")] = False,
    dry_run: DryRunOpt = False,
):
    """Copy control/defaultdelivery into users' .qmail files, or rewrite .qmail-default (vmakedotqmail)."""
    argv = (["-u", user] if user else []) + (["-d", domain] if domain else []) + (["-A"] if all_ else [])
    argv += (["-o"] if overwrite else []) + (["-r"] if reverse else []) + (["-t"] if testing else [])
    argv += ["-q", qmail_default] if qmail_default is not None else []
    _done(lambda: S.MAINS["vmakedotqmail"](argv), dry_run)
