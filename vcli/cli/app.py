"""`vcli`: the Typer app.  Every subcommand is a thin adapter onto actions.py,
so `vcli vadduser` and the classic `vadduser` behave the same; the subcommands
add long options, `--format`, bulk import and cron-friendly switches.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from enum import StrEnum
from typing import Annotated

import typer

from .. import flags as F
from ..errors import UsageError
from ..secretfile import read_secret_file
from . import actions as A
from .common import (
    emit_now,
    guard_std_fds,
    open_store,
    print_lines,
    read_password,
    run,
    warn,
)

app = typer.Typer(
    name="vcli",
    help="Run a vpopmail system: domains, users, aliases and quotas, locally or over vpopmaild.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # never a traceback (with locals: passwords) in cron mail
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    add_completion=False,  # one way to get completions: `vcli completion`
)

_global: dict = {}


class Format(StrEnum):
    plain = "plain"
    table = "table"
    json = "json"
    csv = "csv"


FormatOpt = Annotated[Format, typer.Option("--format", "-o", help="Output format (plain = vpopmail's own text).")]


@app.callback()
def _main(
    vpopmail_dir: Annotated[str | None, typer.Option(help="The vpopmail home (default: VPOPMAIL_DIR, config, "
                                                       "~vpopmail, else the embedded store).")] = None,
    qmail_dir: Annotated[str | None, typer.Option(help="The qmail directory (default: QMAIL_DIR, config, /var/qmail).")] = None,
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for a busy store lock (default 20; 0 = fail at once).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No warnings or notices on stderr.")] = False,
    remote: Annotated[str | None, typer.Option(help="Work on a vpopmaild at HOST[:PORT] (default port 89; "
                                                    "env VCLI_REMOTE).")] = None,
    profile: Annotated[str | None, typer.Option(help="Use the [profiles.NAME] remote of the config file.")] = None,
    login: Annotated[str | None, typer.Option(help="Remote login EMAIL (env VCLI_LOGIN).")] = None,
    remote_password_file: Annotated[str | None, typer.Option(help="Remote password from FILE's first line "
                                                                  "('-' = stdin; env VCLI_PASSWORD).")] = None,
    tls: Annotated[bool | None, typer.Option("--tls/--no-tls", help="TLS to the remote daemon.")] = None,
    ca_file: Annotated[str | None, typer.Option(help="CA bundle to verify the remote daemon's certificate.")] = None,
):
    _global.update(vpopmail_dir=vpopmail_dir, qmail_dir=qmail_dir, wait=wait, quiet=quiet, remote=remote,
                   profile=profile, login=login, password_file=remote_password_file, tls=tls, ca_file=ca_file)


def _store():
    g = _global
    return open_store(g.get("vpopmail_dir"), g.get("qmail_dir"), g.get("wait"), quiet=g.get("quiet", False),
                      remote=g.get("remote"), profile=g.get("profile"), login=g.get("login"),
                      password_file=g.get("password_file"), tls=g.get("tls"), ca_file=g.get("ca_file"))


DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Change nothing; print exactly what would change.")]


def _done(body, dry_run: bool = False) -> None:
    if dry_run:
        body = _dry(body)
    code = run(body)
    if code:
        raise typer.Exit(code)


def _dry(body):
    """Run `body` with every store write recorded instead of made, then print the record."""

    def wrapped():
        from ..store.fsutil import dry_run
        from .output import dry_run_lines

        if _global.get("remote") or _global.get("profile") or os.environ.get("VCLI_REMOTE"):
            raise UsageError("--dry-run works on the local store only")
        with dry_run() as j:
            code = body()
        _lines(dry_run_lines(j))
        return code

    return wrapped


def _lines(lines: list[str]) -> None:
    print_lines(lines)


def _csv_cell(value):
    """A CSV cell: lists as `a;b`, and text a spreadsheet would run as a formula (= + - @, tab, CR
    first) behind a `'`, as OWASP recommends; JSON output carries the values unchanged."""
    if isinstance(value, list):
        value = ";".join(str(x) for x in value)
    elif isinstance(value, dict):
        value = json.dumps(value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        value = "'" + value
    return value


def _emit_rows(rows, fmt: Format, columns: list[str]) -> None:
    """Listings and info in the requested machine format.  `rows` may be a generator: JSON and CSV
    write one row at a time (the same bytes as json.dumps of the whole list); a table needs all."""
    if fmt is Format.json:
        from .output import json_indented

        out, first = sys.stdout, True
        for r in rows:
            out.write(("[\n  " if first else ",\n  ") + json_indented(r, "\n  "))
            first = False
        out.write("[]\n" if first else "\n]\n")
    elif fmt is Format.csv:
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_cell(v) for k, v in r.items()})
    else:
        from tabulate import tabulate

        from .common import printable

        table = [[printable(" ".join(v) if isinstance(v, list) else str(v if v is not None else ""))
                  for v in (r.get(c) for c in columns)] for r in rows]
        sys.stdout.write(tabulate(table, headers=columns) + "\n")


def _password(password: str | None, password_file: str | None, address: str):
    if password_file:
        secret = read_secret_file(password_file)
        if not secret:  # an empty file is not an empty password
            raise A.ClassicError(f"{A.NO_PASSWORD} ({password_file}: empty first line)", 255)
        return secret
    return password


def _random_len(random: bool, length: int) -> int | None:
    return A.random_length(str(length)) if random else None


# --- users -------------------------------------------------------------------


@app.command("vadduser")
def vadduser(
    address: Annotated[str | None, typer.Argument(help="user@domain")] = None,
    password: Annotated[str | None, typer.Argument(help="Password (prefer the prompt or --password-file).")] = None,
    quota: Annotated[str | None, typer.Option("--quota", "-q", help="Quota, e.g. 50M, 1000000, NOQUOTA.")] = None,
    comment: Annotated[str | None, typer.Option("--comment", "-c", help="The gecos comment (default: the user name).")] = None,
    encrypted: Annotated[str | None, typer.Option("--encrypted", "-e", help="Store this crypt(3) hash as the password.")] = None,
    random: Annotated[bool, typer.Option("--random", "-r", help="Generate a random password and print it.")] = False,
    random_length: Annotated[int, typer.Option(help="Length of a --random password.")] = 12,
    password_file: Annotated[str | None, typer.Option(help="Read the password from the first line of FILE ('-' = stdin).")] = None,
    exist_ok: Annotated[bool, typer.Option(help="Succeed without change when the user exists.")] = False,
    from_file: Annotated[str | None, typer.Option(help="Bulk add: address,password[,quota[,comment]] lines or CSV "
                                                        "with a header; '-' = stdin.")] = None,
    hashed: Annotated[bool, typer.Option(help="With --from-file: the password column holds crypt(3) hashes.")] = False,
    jobs: Annotated[int, typer.Option(help="With --from-file: processes hashing passwords (default: all cores).")] = 0,
    dry_run: DryRunOpt = False,
):
    """Add a user (vadduser), or many at once with --from-file."""

    def body():
        if from_file:
            from .bulk import bulk_add

            if address or password:
                raise UsageError("--from-file takes no address or password arguments")
            bulk_add(_store(), from_file, hashed=hashed, exist_ok=exist_ok, jobs=jobs or os.cpu_count() or 1,
                     progress=sys.stderr.isatty() and not _global.get("quiet"))
            return 0
        if not address:
            raise UsageError("an address (or --from-file) is required")
        if random and password:
            raise UsageError("don't use -r option when giving password on command line")
        pw = _password(password, password_file, address)
        _lines(A.add_user(_store(), address, pw, hashed=encrypted, gecos=comment, quota=quota,
                          random_len=_random_len(random, random_length), exist_ok=exist_ok,
                          ask_password=read_password, show=emit_now))

    _done(body, dry_run)


@app.command("vdeluser")
def vdeluser(
    address: Annotated[str, typer.Argument(help="user@domain")],
    missing_ok: Annotated[bool, typer.Option(help="Succeed when the user does not exist.")] = False,
    dry_run: DryRunOpt = False,
):
    """Delete a user and the home directory (vdeluser)."""
    _done(lambda: A.del_user(_store(), address, missing_ok=missing_ok), dry_run)


def _vmoduser(
    target: str,
    quota: str | None,
    comment: str | None,
    encrypted: str | None,
    password_file: str | None,
    clear_password: str | None,
    clear_flags: bool,
    unset: list[str] | None,
    home: str | None,
    no_cdb: bool,
    dry_run: bool,
    **flag_values: bool,
):
    """Change a user, or every user of a domain (vmoduser)."""
    from ..model import UserChanges

    def body():
        letters = [F.BY_FIELD[name].letter for name, on in flag_values.items() if on]
        hashed = A.no_empty(encrypted)  # an empty -e/-c/-D/-C is not given, as in vmoduser
        if hashed is not None:
            A.check_hash_text(hashed)
        ch = UserChanges(gecos=A.no_empty(comment), hashed=hashed, quota=quota, dir=A.no_empty(home),
                         clear_flags=clear_flags, set_flags=A.flag_changes(letters, warn))
        if A.no_empty(clear_password) is not None:
            ch.password, ch.hashed = clear_password, None
        for name in unset or []:
            f = F.BY_FIELD.get(name.replace("-", "_"))
            if f is None:
                raise UsageError(f"unknown flag {name!r}; one of: {', '.join(x.field for x in F.FLAGS)}")
            ch.unset_flags |= f.bit
        if password_file:
            ch.password, ch.hashed = _password(None, password_file, target), None
        A.mod_user(_store(), target, ch, rebuild_cdb=not no_cdb)

    _done(body, dry_run)


def _build_vmoduser():
    """vmoduser's signature: fixed options plus one option per flag of the table."""
    P = inspect.Parameter
    params = [
        P("target", P.POSITIONAL_OR_KEYWORD, annotation=Annotated[str, typer.Argument(help="user@domain, or a domain")]),
        P("quota", P.KEYWORD_ONLY, default=None,
          annotation=Annotated[str | None, typer.Option("--quota", "-q", help="Set the quota.")]),
        P("comment", P.KEYWORD_ONLY, default=None,
          annotation=Annotated[str | None, typer.Option("--comment", "-c", help="Set the gecos comment.")]),
        P("encrypted", P.KEYWORD_ONLY, default=None,
          annotation=Annotated[str | None, typer.Option("--encrypted", "-e", help="Set the password hash verbatim.")]),
        P("password_file", P.KEYWORD_ONLY, default=None,
          annotation=Annotated[str | None, typer.Option(help="New clear-text password from FILE's first line ('-' = stdin).")]),
        P("clear_password", P.KEYWORD_ONLY, default=None,
          annotation=Annotated[str | None, typer.Option("--clear-password", "-C",
                                                        help="Set this clear-text password (prefer --password-file).")]),
        P("clear_flags", P.KEYWORD_ONLY, default=False,
          annotation=Annotated[bool, typer.Option("--clear-flags", "-x", help="Clear all flags first.")]),
        P("unset", P.KEYWORD_ONLY, default=None,
          annotation=Annotated[list[str] | None, typer.Option(help="Clear one flag (repeatable), e.g. --unset no_pop.")]),
        P("home", P.KEYWORD_ONLY, default=None,
          annotation=Annotated[str | None, typer.Option("--dir", "-D", help="Set the home directory field.")]),
        P("no_cdb", P.KEYWORD_ONLY, default=False,
          annotation=Annotated[bool, typer.Option("--no-cdb", "-n", help="Do not rebuild vpasswd.cdb (it goes stale).")]),
        P("dry_run", P.KEYWORD_ONLY, default=False, annotation=DryRunOpt),
    ]
    for f in F.USAGE_ORDER:
        help_text = f.help + (" (root only)" if f.root_only else "")
        params.append(P(f.field, P.KEYWORD_ONLY, default=False,
                        annotation=Annotated[bool, typer.Option(f"-{f.letter}", f.option, help=help_text)]))

    def vmoduser(**kw):
        return _vmoduser(**kw)

    vmoduser.__signature__ = inspect.Signature(params)
    vmoduser.__annotations__ = {p.name: p.annotation for p in params}
    vmoduser.__doc__ = _vmoduser.__doc__
    return vmoduser


app.command("vmoduser", context_settings={"help_option_names": ["--help"]})(_build_vmoduser())


@app.command("vuserinfo")
def vuserinfo(
    address: Annotated[str | None, typer.Argument(help="user@domain")] = None,
    domain: Annotated[str | None, typer.Option("--domain", "-D", help="Every user of this domain.")] = None,
    fields: Annotated[str, typer.Option("--fields", help="vuserinfo selector letters, e.g. nq (plain format).")] = "",
    all_: Annotated[bool, typer.Option("-a", "--all", help="All fields (the default).")] = False,
    name: Annotated[bool, typer.Option("-n", "--name", help="The name.")] = False,
    passwd: Annotated[bool, typer.Option("-p", "--passwd", help="The password hash.")] = False,
    clear: Annotated[bool, typer.Option("-C", "--clear", help="The clear-text password (clear-passwd sites).")] = False,
    uid: Annotated[bool, typer.Option("-u", "--uid", help="The uid field (1 POP, 2 APOP).")] = False,
    gid: Annotated[bool, typer.Option("-g", "--gid", help="The gid field (the flag bits).")] = False,
    comment: Annotated[bool, typer.Option("-c", "--comment", help="The gecos comment.")] = False,
    home: Annotated[bool, typer.Option("-d", "--dir", help="The home directory.")] = False,
    quota: Annotated[bool, typer.Option("-q", "--quota", help="The quota.")] = False,
    usage: Annotated[bool, typer.Option("-Q", "--usage", help="The quota usage.")] = False,
    lastauth: Annotated[bool, typer.Option("-l", "--lastauth", help="Creation / last authentication.")] = False,
    fmt: FormatOpt = Format.plain,
):
    """Show a user, or every user of a domain (vuserinfo)."""
    chosen = zip("anpCugcdqQl", (all_, name, passwd, clear, uid, gid, comment, home, quota, usage, lastauth),
                 strict=True)
    fields += "".join(letter for letter, on in chosen if on)

    def body():
        if not address and not domain:
            raise UsageError("an address or --domain is required")
        store = _store()
        if fmt is Format.plain:
            bad = set(fields) - set("npCugcdqQla")
            if bad:
                raise UsageError(f"unknown selector letters: {''.join(sorted(bad))}")
            _lines(A.user_info_lines(store, address, domain, "" if "a" in fields else fields))
            return
        from .output import READ, user_json

        if domain:
            from .progress import Progress

            users, real = A.domain_users(store, domain)
            enabled = sys.stderr.isatty() and not sys.stdout.isatty() and not _global.get("quiet")
            bar = Progress(f"reading {real}", store.user_counter(store.real_entry(real)) if enabled else None,
                           enabled=enabled)
            with_usage = fmt is Format.json  # CSV has no usage column: no maildirsize read
            memo: dict[int, list[str]] = {}

            def names(bits: int) -> list[str]:
                if bits not in memo:
                    memo[bits] = F.names_of(bits)
                return list(memo[bits])

            def stream():  # one user at a time (issue 11 item 2): never the whole domain in memory
                pairs = A.with_mask(store, users, real)
                if with_usage:  # the Maildir and lastauth reads, on two cores for a big cdb domain
                    from .listing import usage_and_lastauth

                    read = usage_and_lastauth(store, real, pairs)
                else:
                    read = ((u, mask, None, READ) for u, mask in pairs)
                for i, (u, mask, usage, auth) in enumerate(read, 1):
                    yield user_json(store, u, real, with_usage, mask=mask, names=names, usage=usage, auth=auth)
                    bar(i)
                bar.done()

            rows = stream()
        else:
            u, real = A.lookup_user(store, address)
            rows = [user_json(store, u, real)]
        if fmt is Format.json and not domain:
            sys.stdout.write(json.dumps(rows[0], indent=2) + "\n")
            return
        _emit_rows(rows, fmt, ["address", "gecos", "quota", "flags", "flag_names", "dir"])

    _done(body)


@app.command("vpasswd")
def vpasswd(
    address: Annotated[str, typer.Argument(help="user@domain")],
    password: Annotated[str | None, typer.Argument(help="New password (prefer the prompt or --password-file).")] = None,
    random: Annotated[bool, typer.Option("--random", "-r", help="Generate a random password and print it.")] = False,
    random_length: Annotated[int, typer.Option(help="Length of a --random password.")] = 12,
    password_file: Annotated[str | None, typer.Option(help="Read the password from FILE's first line ('-' = stdin).")] = None,
    dry_run: DryRunOpt = False,
):
    """Change a user's password (vpasswd)."""

    def body():
        if random and password:
            raise UsageError("don't use -r option when giving password on command line")
        pw = _password(password, password_file, address)
        _lines(A.set_password(_store(), address, pw, _random_len(random, random_length), ask_password=read_password,
                              show=emit_now))

    _done(body, dry_run)


@app.command("vsetuserquota")
def vsetuserquota(
    target: Annotated[str, typer.Argument(help="user@domain, or a domain for all its users")],
    quota: Annotated[str, typer.Argument(help="e.g. 50M, 1000000S,1000C, NOQUOTA")],
    dry_run: DryRunOpt = False,
):
    """Set the quota of a user or of every user of a domain (vsetuserquota)."""
    _done(lambda: A.set_quota(_store(), target, quota), dry_run)


# --- domains -----------------------------------------------------------------


@app.command("vadddomain")
def vadddomain(
    domain: Annotated[str, typer.Argument(help="The new domain")],
    password: Annotated[str | None, typer.Argument(help="postmaster's password (prefer the prompt or --password-file).")] = None,
    quota: Annotated[str | None, typer.Option("--quota", "-q", help="postmaster's quota.")] = None,
    catchall: Annotated[str | None, typer.Option("--catchall", "-e", help="Deliver unknown users' mail to this "
                                                       "address, or (no '@') to this mailbox of the domain.")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Owner (and base dir) from this system user.")] = None,
    base_dir: Annotated[str | None, typer.Option("--dir", "-d", help="Base directory (domains/ goes below it).")] = None,
    uid: Annotated[str | None, typer.Option("--uid", "-i", help="Owner uid.")] = None,
    gid: Annotated[str | None, typer.Option("--gid", "-g", help="Owner gid.")] = None,
    optimize: Annotated[bool, typer.Option("--optimize", "-O", help="Bulk adds: do not signal qmail-send.")] = False,
    random: Annotated[bool, typer.Option("--random", "-r", help="Random postmaster password, printed.")] = False,
    random_length: Annotated[int, typer.Option(help="Length of a --random password.")] = 12,
    password_file: Annotated[str | None, typer.Option(help="postmaster password from FILE's first line ('-' = stdin).")] = None,
    exist_ok: Annotated[bool, typer.Option(help="Succeed without change when the domain exists.")] = False,
    dry_run: DryRunOpt = False,
):
    """Add a domain with its postmaster (vadddomain)."""

    def body():
        store = _store()
        if exist_ok and store.find_domain(domain.lower()):
            return
        opts = A.DomainOptions(quota=quota, catchall=catchall, user=user, base_dir=base_dir, uid=uid, gid=gid,
                               optimize=optimize)
        pw = _password(password, password_file, domain)
        _lines(A.add_domain(store, domain, pw, opts, _random_len(random, random_length),
                            ask_password=read_password, show=emit_now))

    _done(body, dry_run)


@app.command("vdeldomain")
def vdeldomain(
    domain: Annotated[str, typer.Argument(help="The domain (real or alias)")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Also delete its alias domains.")] = False,
    missing_ok: Annotated[bool, typer.Option(help="Succeed when the domain does not exist.")] = False,
    dry_run: DryRunOpt = False,
):
    """Delete a domain, its users and mail (vdeldomain)."""
    def body():
        from .progress import Progress

        bar = Progress(f"removing {domain}", enabled=sys.stderr.isatty() and not _global.get("quiet"))
        out = A.del_domain(_store(), domain, force, missing_ok=missing_ok, progress=bar, dry_run=dry_run)
        bar.done()
        _lines(out)

    _done(body, dry_run)


@app.command("vdominfo")
def vdominfo(
    domain: Annotated[str | None, typer.Argument(help="A domain (default: all)")] = None,
    fields: Annotated[str, typer.Option("--fields", help="vdominfo selector letters nugdtr (plain format).")] = "",
    all_: Annotated[bool, typer.Option("-a", "--all", help="All fields (the default).")] = False,
    name: Annotated[bool, typer.Option("-n", "--name", help="The domain name.")] = False,
    uid: Annotated[bool, typer.Option("-u", "--uid", help="The owner uid.")] = False,
    gid: Annotated[bool, typer.Option("-g", "--gid", help="The owner gid.")] = False,
    ddir: Annotated[bool, typer.Option("-d", "--dir", help="The domain directory.")] = False,
    total: Annotated[bool, typer.Option("-t", "--total", help="The number of users.")] = False,
    real: Annotated[bool, typer.Option("-r", "--real", help="The real domain.")] = False,
    fmt: FormatOpt = Format.plain,
):
    """Show one domain or all domains (vdominfo)."""
    fields += "".join(letter for letter, on in zip("anugdtr", (all_, name, uid, gid, ddir, total, real),
                                                   strict=True) if on)

    def body():
        store = _store()
        if fmt is Format.plain:
            _lines(A.dom_info_lines(store, domain, "" if "a" in fields else fields))
            return
        from .output import domain_json

        rows = [domain_json(i) for i in A.domain_infos(store, domain)]
        if fmt is Format.json and domain:
            sys.stdout.write(json.dumps(rows[0], indent=2) + "\n")
            return
        _emit_rows(rows, fmt, ["domain", "real", "users", "uid", "gid", "dir", "aliases"])

    _done(body)


@app.command("vaddaliasdomain")
def vaddaliasdomain(
    real_domain: Annotated[str, typer.Argument(help="The existing domain")],
    alias_domain: Annotated[str, typer.Argument(help="The new alias (either order works)")],
    dry_run: DryRunOpt = False,
):
    """Make a domain an alias of an existing one (vaddaliasdomain)."""
    _done(lambda: A.add_alias_domain(_store(), real_domain, alias_domain), dry_run)


@app.command("valias")
def valias(
    target: Annotated[str, typer.Argument(help="alias@domain, or a domain")],
    insert: Annotated[str | None, typer.Option("--insert", "-i", help="Add this delivery line to the alias.")] = None,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Delete the alias.")] = False,
    names: Annotated[bool, typer.Option("--names", "-n", help="Only the alias names of a domain.")] = False,
    show: Annotated[bool, typer.Option("--show", "-s", help="List the aliases and their lines (the default).")] = False,
    fmt: FormatOpt = Format.plain,
    dry_run: DryRunOpt = False,
):
    """List, add or delete aliases and forwards (valias)."""

    def body():
        store = _store()
        if insert is not None:
            A.alias_insert(store, target, insert)
        elif delete:
            A.alias_delete(store, target)
        elif names:
            result = A.alias_names(store, target)
            if fmt is Format.plain:
                _lines(result)
            else:
                _emit_rows([{"alias": n} for n in result], fmt, ["alias"])
        else:
            rows = A.alias_listing(store, target)
            if fmt is Format.plain:
                _lines([f"{a}@{d} -> {x}" for a, d, x in rows])
            else:
                _emit_rows([{"alias": f"{a}@{d}", "line": x} for a, d, x in rows], fmt, ["alias", "line"])

    _done(body, dry_run)


@app.command("catchall")
def catchall(
    domain: Annotated[str, typer.Argument(help="The domain (real or alias)")],
    set_: Annotated[str | None, typer.Option("--set", help="Send mail to unknown users to this address, or (no "
                                                           "'@') to this mailbox of the domain.")] = None,
    bounce: Annotated[bool, typer.Option("--bounce", help="Bounce mail to unknown users (bounce-no-mailbox).")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Delete mail to unknown users (vpopmail's default).")] = False,
    dry_run: DryRunOpt = False,
):
    """Show or set where mail to unknown users of a domain goes (.qmail-default; vadddomain -e)."""

    def body():
        if sum((set_ is not None, bounce, delete)) > 1:
            raise UsageError("give one of --set, --bounce, --delete")
        store = _store()
        if set_ is None and not bounce and not delete:
            _lines(A.catchall_show(store, domain))
            return
        action = "bounce-no-mailbox" if bounce else ("delete" if delete else None)
        A.catchall_set(store, domain, set_, action)

    _done(body, dry_run)


completion_app = typer.Typer(help="Shell completion for vcli and the classic command names.", no_args_is_help=True)
app.add_typer(completion_app, name="completion")


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


ShellOpt = Annotated[Shell | None, typer.Option("--shell", help="bash, zsh or fish (default: from $SHELL).")]


def _shell(shell: Shell | None) -> Shell:
    if shell is not None:
        return shell
    name = os.path.basename(os.environ.get("SHELL", ""))
    if name in Shell.__members__:
        return Shell(name)
    raise UsageError(f"cannot tell the shell ({'$SHELL unset' if not name else name!r}): use --shell bash|zsh|fish")


def _completion_script(shell: Shell) -> str:
    from . import gendocs

    return {Shell.bash: gendocs.bash, Shell.zsh: gendocs.zsh, Shell.fish: gendocs.fish}[shell]()


@completion_app.command("show")
def completion_show(shell: ShellOpt = None):
    """Print the completion script."""
    def body():
        sys.stdout.write(_completion_script(_shell(shell)))  # its return value is no exit status

    _done(body)


@completion_app.command("install")
def completion_install(
    shell: ShellOpt = None,
    directory: Annotated[str | None, typer.Option("--dir", help="Install into DIR instead of the shell's "
                                                               "usual place (packaging, tests).")] = None,
):
    """Install the completion script where the shell finds it (for vcli and the classic names)."""

    def body():
        from .gendocs import CLASSIC

        sh = _shell(shell)
        home = os.path.expanduser("~")
        root = os.geteuid() == 0
        if sh is Shell.bash:
            d = "/usr/share/bash-completion/completions" if root else os.path.join(
                os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share"), "bash-completion",
                "completions")
            main_file, loader = os.path.join(d, "vcli"), "source {main}\n"
            extra = [os.path.join(d, n) for n in CLASSIC]
        elif sh is Shell.zsh:
            d = "/usr/local/share/zsh/site-functions" if root else os.path.join(home, ".zfunc")
            main_file, loader, extra = os.path.join(d, "_vcli"), "", []
        else:
            d = "/usr/share/fish/vendor_completions.d" if root else os.path.join(
                os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "fish", "completions")
            main_file, loader = os.path.join(d, "vcli.fish"), "source {main}\n"
            extra = [os.path.join(d, n + ".fish") for n in CLASSIC]
        if directory:
            main_file = os.path.join(directory, os.path.basename(main_file))
            extra = [os.path.join(directory, os.path.basename(x)) for x in extra]
            d = directory
        os.makedirs(d, exist_ok=True)
        with open(main_file, "w", encoding="utf-8") as f:
            f.write(_completion_script(sh))
        for path in extra:  # shells load completions by command name: each name loads the one script
            with open(path, "w", encoding="utf-8") as f:
                f.write(loader.format(main=main_file))
        print(f"installed {main_file}" + (f" (and {len(extra)} classic names)" if extra else ""))
        if sh is Shell.zsh and not root:
            print("add to ~/.zshrc, before compinit:  fpath=(~/.zfunc $fpath)")

    _done(body)


config_app = typer.Typer(help="The configuration file and the settings in force.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("path")
def config_path():
    """Print the config files vcli reads, in order (the first that exists wins)."""
    from ..config import config_paths

    for p in config_paths():
        print(p + ("" if os.path.exists(p) else "  (missing)"))


@config_app.command("show")
def config_show(fmt: FormatOpt = Format.plain):
    """Print the settings in force and where the store is; passwords masked."""

    def body():
        from ..config import load_settings

        s = load_settings({"vpopmail_dir": _global.get("vpopmail_dir"), "qmail_dir": _global.get("qmail_dir")},
                          announce=warn, read_db=True)
        data = s.as_dict()
        data["profiles"] = {name: {k: ("********" if k == "password" else v) for k, v in prof.items()}
                            for name, prof in (s.profiles or {}).items()}
        if fmt is Format.json:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
            return
        for key, value in data.items():  # each setting with where it came from
            if key in ("profiles", "sources", "db"):
                continue
            where = s.sources.get(key)
            text = f"{key} = {value if value is not None else ''}"
            print(f"{text:<40} # {where}" if where else text)
        if s.db is not None:
            for role in ("read", "update"):
                print(f"{'[db.' + role + ']':<40} # {s.db.path}")
                for k, v in data["db"][role].items():
                    print(f"  {k} = {v if v is not None else ''}")
        for name, prof in data["profiles"].items():
            print(f"[profiles.{name}]")
            for k, v in prof.items():
                print(f"  {k} = {v}")

    _done(body)


@app.command("check")
def check_cmd(
    domain: Annotated[str | None, typer.Argument(help="Check only this domain (default: the whole store).")] = None,
    repair: Annotated[bool, typer.Option(help="Fix what can be fixed without guessing, and say what was done.")] = False,
):
    """Check the store's consistency (read-only unless --repair); exit 65 when problems remain."""

    def body():
        from ..errors import EXIT_DATAERR
        from ..store.check import check

        store = _store()
        if getattr(store, "is_remote", False):
            from ..errors import UsageError

            raise UsageError("check works on a local store only: run it on the mail server")
        problems = check(store, domain)
        if repair and any(p.repair for p in problems):
            for p in problems:
                if p.repair:
                    print(f"repaired: {p.repair()}")
            problems = check(store, domain)
        for p in problems:
            print(str(p))
        return EXIT_DATAERR if problems else 0

    _done(body)


@app.command("vpopmaild", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def vpopmaild(ctx: typer.Context):
    """Serve the vpopmaild protocol (see `vcli vpopmaild --help`)."""
    from ..daemon.cli import main as daemon_main

    raise typer.Exit(daemon_main(list(ctx.args)) or 0)


@app.command("checkpassword", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def checkpassword(ctx: typer.Context):
    """Check login NUL password NUL on fd 3 (the checkpassword interface), locally or with
    --remote/--profile through a vpopmaild, then run the program given; exit 1 refused, 2 misuse,
    111 temporary. Per-login use: the lean `vcheckpassword` command is the same and starts faster."""
    from .checkpw import checkpassword_main

    global _RAW_STATUS
    _RAW_STATUS = True  # its 2 is the checkpassword interface's "misuse", not click's usage error
    raise typer.Exit(checkpassword_main(list(ctx.args)))


_RAW_STATUS = False


def main() -> None:
    guard_std_fds()
    try:
        app()
    except SystemExit as exc:
        # click ends a bad command line with status 2, which no vcli command uses otherwise;
        # the README promises EX_USAGE (64) for it
        if exc.code == 2 and not _RAW_STATUS:
            from ..errors import EXIT_USAGE

            raise SystemExit(EXIT_USAGE) from None
        raise


# the issue-12 tools register their subcommands on `app`
from . import app_convert, app_domtools, app_ipmap, app_smalltools  # noqa: E402,F401
