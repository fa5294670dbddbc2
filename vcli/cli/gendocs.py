"""Generate completions/ and man/ from the Typer app, the classic getopt strings, the daemon's
argparse parser and the flag table — the same sources as --help — so they never drift.

    python -m vcli.cli.gendocs [--check]     write (or, with --check, compare) the checked-in files
"""

from __future__ import annotations

import os
import re
import sys

from .. import flags as F

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERSION = "0.1.0"
CLASSIC = ("vadduser", "vdeluser", "vmoduser", "vuserinfo", "vpasswd", "vsetuserquota", "vadddomain",
           "vdeldomain", "vdominfo", "valias", "vaddaliasdomain", "vmoddomlimits", "vdeloldusers", "vpopbull")
SMALL_TOOLS = ("vverifypw", "vmkpasswd", "vchangepw", "vmakedotqmail", "dotqmail2valias", "vrcptcheck",
               "vusagec")  # issue 12: vcli/cli/smalltools.py
CLASSIC += SMALL_TOOLS
IPMAP_TOOLS = ("vipmap",)  # issue 12 item 6: vcli/cli/ipmap.py
CLASSIC += IPMAP_TOOLS
CHECKPW = ("vchkpw", "vcheckpassword")  # checkpassword programs: run with a program to exec, man section 8

# README "Exit codes", one structure for the man pages and the README check
EXIT_CODES = [
    ("0", "success"),
    ("1", "refused, nothing done (e.g. vdeldomain of a domain with aliases, without -f); vrcptcheck: no such "
          "recipient; vusagec without arguments"),
    ("3", "vchangepw: the old password is wrong, the user unknown, or the password too long"),
    ("64", "bad command line (vcli subcommands); the classic names keep vpopmail's 255"),
    ("65", "a store file is corrupt and could not be repaired; vcli check found problems; a --from-file line "
           "is not UTF-8"),
    ("69", "the remote vpopmaild cannot be reached, or closed the connection"),
    ("70", "internal error (a bug: please report)"),
    ("74", "I/O error: disk full, read-only file system, permission denied; a random password that cannot be "
           "shown"),
    ("75", "store lock busy (File busy try again later!) after --wait"),
    ("76", "the remote vpopmaild answered something unexpected"),
    ("77", "remote login failed, or the login may not do this"),
    ("78", "bad configuration file: unreadable, not TOML, an unknown key, or a VCLI_CONFIG file that does not "
           "exist; a bad vpopmail.mysql/pgsql; the site's vpopmail uses an auth module this vcli lacks; "
           "vpopmaild: unknown --user, or that user cannot read the store"),
    ("111", "temporary failure, try again: vrcptcheck (no fd 3, the store unreadable), vchkpw and "
            "vcheckpassword (store unreadable, vpopmaild down or silent; their other codes: vchkpw(8), "
            "vcheckpassword(8))"),
    ("201", "can't delete catchall account"),
    ("220", "can't read domain limits"),
    ("225-231", "a field too long (clear password, dir, quota, gecos, password, domain, user name)"),
    ("236", "bad character"),
    ("243", "domain already exists"),
    ("244", "invalid domain name"),
    ("245", "domain does not exist"),
    ("246", "user does not exist"),
    ("249", "user's directory already exists"),
    ("253", "vpopmail directory missing; vmkpasswd of an unknown domain"),
    ("254", "user exists (library), unknown option of valias"),
    ("255", "illegal username, and every classic error vpopmail reports with -1; dotqmail2valias on a store "
            "without valias; vipmap: a bad IP address, -d of a mapping that is not there, a build without ip "
            "alias domains"),
    ("182-187", "password refused by the strength policy"),
]

# config keys (vcli.config._SETTINGS_ENV) -> what they mean
CONFIG_HELP = {
    "vpopmail_dir": "the vpopmail home (default: home of the vpopmail user, else the embedded store)",
    "qmail_dir": "the qmail directory (default: QMAILDIR of vpopmail_config.h, else /var/qmail)",
    "clear_passwords": "write the 8th, clear-text vpasswd field (default: CLEAR_PASS of vpopmail_config.h)",
    "hash": "hash scheme of new passwords: sha512, md5 or des (default: what vpopmail_config.h says -- "
            "SHA512_PASSWORDS, MD5_PASSWORDS, neither: des -- else sha512)",
    "qmail_default": "vdelivermail action in a new domain's .qmail-default (default delete)",
    "max_user": "longest user name (default 64)",
    "max_gecos": "longest comment (default 64)",
    "random_length": "length of random passwords (default 12)",
    "lock_wait": "seconds to wait for a busy store lock (default 20)",
    "vpopmail_uid": "owner uid of new domains (default: the vpopmail user)",
    "vpopmail_gid": "owner gid of new domains (default: VPOPMAILGID of vpopmail_config.h, else the vchkpw group)",
    "auth_module": "where users live: cdb, mysql or pgsql (default: USE_CDB/USE_MYSQL/USE_POSTGRES of "
                   "include/vpopmail_config.h, else cdb); only cdb is available in this version",
    "many_domains": "one vpopmail table for all domains (MANY_DOMAINS; default true)",
    "sql_aliasdomains": "alias domains also in the aliasdomains table (SQL_ALIASDOMAINS)",
    "mysql_limits": "domain limits in the limits table (ENABLE_MYSQL_LIMITS)",
    "valias": "aliases in the valias table (VALIAS)",
    "auth_logging": "last login time and IP kept (ENABLE_AUTH_LOGGING; default true)",
    "ip_alias_domains": "the site's vpopmail has ip alias domains (--enable-ip-alias-domains): vipmap and the "
                        "daemon's ip map commands work on etc/ip_alias_map (IP_ALIAS_DOMAINS; default false)",
    "mysql_replication": "reads from the first line of vpopmail.mysql (MYSQL_REPLICATION)",
    "db_file": "the SQL connection file (default: etc/vpopmail.mysql or etc/vpopmail.pgsql; vcli convert --db-file sets it)",
}
PROFILE_HELP = {
    "remote": "HOST[:PORT] of the vpopmaild (default port 89)",
    "login": "the login, an email address",
    "password": "its password; the file must then be mode 0600",
    "tls": "true for a TLS listener",
    "ca_file": "CA bundle to verify the daemon's certificate",
    "allow_plain": "true to silence the warning for plain TCP to a non-loopback address",
    "timeout": "seconds to wait for an answer (default 30)",
    "clear_passwords": "true when that server stores clear-text passwords",
}


# --- reading the sources ---------------------------------------------------------

def app_model() -> list[dict]:
    """Commands of `vcli` with their options and arguments, from the click tree."""
    import typer.main

    from .app import app

    root = typer.main.get_command(app)
    out = [{"name": "", "help": root.help or "", "options": _options(root), "args": []}]
    for name, cmd in root.commands.items():
        out.append(_command(name, cmd))
        if name == "vpopmaild":  # its options are the daemon's own argparse parser
            out[-1]["options"] = daemon_options()
        if name == "checkpassword":  # its options are vcheckpassword's own parser
            out[-1]["options"] = checkpw_options()
        for sub, scmd in getattr(cmd, "commands", {}).items():
            out.append(_command(f"{name} {sub}", scmd))
    return out


def _command(name: str, cmd) -> dict:
    args = [p.name for p in cmd.params if p.param_type_name == "argument"]
    return {"name": name, "help": (cmd.help or "").strip(), "options": _options(cmd), "args": args}


def _options(cmd) -> list[dict]:
    out = []
    for p in cmd.params:
        if p.param_type_name != "option" or p.hidden:
            continue
        choices = list(getattr(p.type, "choices", None) or [])
        out.append({"opts": list(p.opts) + list(p.secondary_opts), "flag": bool(p.is_flag),
                    "help": (p.help or "").strip(), "metavar": (p.metavar or p.name or "").upper(),
                    "choices": [str(c) for c in choices], "value": _value_kind(p.name, bool(p.is_flag))})
    out.append({"opts": ["-h", "--help"], "flag": True, "help": "Show the help and exit.", "metavar": ""})
    return out


def _value_kind(name: str | None, flag: bool) -> str:
    """What an option's value names, for completion: a domain (vuserinfo --domain) or nothing known."""
    return "domain" if not flag and name == "domain" else "none"


def daemon_options() -> list[dict]:
    from ..daemon.cli import build_parser

    out = []
    for a in build_parser()._actions:
        if a.option_strings:
            out.append({"opts": list(a.option_strings), "flag": a.nargs == 0, "help": (a.help or "").strip(),
                        "metavar": a.metavar or a.dest.upper(), "choices": [str(c) for c in a.choices or []],
                        "value": "none"})
    return out


def checkpw_options() -> list[dict]:
    from .checkpw import CHECKPASSWORD_OPTIONS

    return [{"opts": [o], "flag": not v, "help": h, "metavar": v, "value": "none",
             "choices": ["pop", "imap", "smtp", "webmail"] if o == "--service" else []}
            for o, v, h in CHECKPASSWORD_OPTIONS]


def arg_kind(names: list[str]) -> str:
    joined = " ".join(names)
    if "target" in joined:
        return "target"
    if "address" in joined:
        return "address"
    if "domain" in joined:
        return "domain"
    return "none"


# option values of the classic tools that name something in the store
CLASSIC_VALUES = {("vuserinfo", "D"): "domain", ("vdeloldusers", "d"): "domain"}


def classic_model() -> dict[str, dict]:
    from . import ipmap as IP
    from . import smalltools as S
    from . import usage as U
    from .classic import ARGUMENTS, OPTSTRINGS

    OPTSTRINGS = {**OPTSTRINGS, **S.OPTSTRINGS, **IP.OPTSTRINGS}
    ARGUMENTS = {**ARGUMENTS, **S.ARGUMENTS, **IP.ARGUMENTS}
    values = {**CLASSIC_VALUES, **S.VALUES}
    out = {}
    for name in CLASSIC:
        text = S.USAGE.get(name) or IP.USAGE.get(name) or (U.VMODUSER if name == "vmoduser" else getattr(U, name.upper()))
        letters = re.findall(r"([A-Za-z0-9])(?=:{0,2})", OPTSTRINGS[name])
        helps = {}
        for line in text.splitlines():
            m = re.match(r"\s*(?:options:)?\s*-([A-Za-z0-9])(\[\w+\])?\s*(.*)", line)
            if m:
                rest = m.group(3)
                if "(" in rest:  # "-c comment (set the comment/gecos field )" -> the part in parentheses
                    rest = rest[rest.index("(") + 1 : rest.rindex(")") if ")" in rest else len(rest)]
                helps[m.group(1)] = rest.strip()
        opts = [{"letter": c, "help": helps.get(c, ""), "arg": OPTSTRINGS[name].split(c, 1)[1][:1] == ":",
                 "optional": OPTSTRINGS[name].split(c, 1)[1][:2] == "::",
                 "value": values.get((name, c), "none")}
                for c in dict.fromkeys(letters)]
        out[name] = {"usage": text, "options": opts, "kind": ARGUMENTS[name]}
    return out


# --- completions -------------------------------------------------------------------

def bash() -> str:
    model = app_model()
    root, cmds = model[0], [c for c in model[1:] if " " not in c["name"]]
    subs = {c["name"]: [s["name"].split(" ", 1)[1] for s in model[1:] if s["name"].startswith(c["name"] + " ")]
            for c in cmds}
    value_opts = [o for opt in root["options"] if not opt["flag"] for o in opt["opts"]]
    lines = [
        "# bash completion for vcli and the classic vpopmail command names",
        "# generated by `python -m vcli.cli.gendocs`; do not edit",
        "",
        "# user@domain is one word to complete: take '@' out of the word breaks (the functions below",
        "# still cope if something puts it back, for domains after the '@')",
        "COMP_WORDBREAKS=${COMP_WORDBREAKS//@/}",
        "",
        "_vcli_cur() {  # the word being completed, '@' included",
        '    local line="${COMP_LINE:0:$COMP_POINT}"',
        '    printf \'%s\' "${line##*[[:space:]]}"',
        "}",
        "",
        "_vcli_store() {  # kind word: candidates from the store, relative to COMP_WORDBREAKS",
        "    local IFS=$'\\n' cur=\"$2\" c",
        '    COMPREPLY=($(vcli-complete "$1" "$cur" "${_vcli_store_opts[@]}" 2>/dev/null))',
        '    if [[ "$cur" == *@* && "$COMP_WORDBREAKS" == *@* ]]; then',
        '        local p="${cur%@*}@" keep=()',
        '        for c in "${COMPREPLY[@]}"; do [[ "$c" == "$p"* ]] && keep+=("${c#"$p"}"); done',
        '        COMPREPLY=("${keep[@]}")',
        "    fi",
        "}",
        "",
        "_vcli_arg() {  # kind word",
        '    case "$1" in',
        '        address) [[ "$2" == *@* ]] && _vcli_store addresses "$2" ;;',
        '        domain) _vcli_store domains "$2" ;;',
        '        target) if [[ "$2" == *@* ]]; then _vcli_store addresses "$2"; else _vcli_store domains "$2"; fi ;;',
        "    esac",
        "}",
        "",
        "_vcli() {",
        '    local cur; cur="$(_vcli_cur)"',
        "    local cmd='' sub='' i w skip=0",
        "    _vcli_store_opts=()",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        w="${COMP_WORDS[i]}"',
        "        if ((skip)); then skip=0; continue; fi",
        '        case "$w" in',
        '            --vpopmail-dir|--qmail-dir) _vcli_store_opts+=("$w" "${COMP_WORDS[i+1]}"); skip=1 ;;',
        f'            {"|".join(value_opts) or "--none"}) skip=1 ;;',
        "            -*) ;;",
        '            *) if [[ -z "$cmd" ]]; then cmd="$w"; elif [[ -z "$sub" ]]; then sub="$w"; fi ;;',
        "        esac",
        "    done",
        '    if [[ -z "$cmd" ]]; then',
        f'        if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "{_words(root)}" -- "$cur"));',
        f'        else COMPREPLY=($(compgen -W "{" ".join(c["name"] for c in cmds)}" -- "$cur")); fi',
        "        return",
        "    fi",
        "    local opts='' kind=none",
        '    case "$cmd" in',
    ]
    for c in cmds:
        if subs[c["name"]]:
            lines.append(f'        {c["name"]}) if [[ -z "$sub" ]]; then COMPREPLY=($(compgen -W '
                         f'"{" ".join(subs[c["name"]])}" -- "$cur")); return; fi ;;')
            continue
        lines.append(f'        {c["name"]}) opts="{_words(c)}"; kind={arg_kind(c["args"])} ;;')
    lines += [
        "    esac",
        '    _vcli_value "$cmd" "${COMP_WORDS[COMP_CWORD-1]}" "$cur" && return',
        '    if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); return; fi',
        '    _vcli_arg "$kind" "$cur"',
        "}",
        "complete -o default -F _vcli vcli",
        "",
        "_vcli_value() {  # command previous-word word: complete an option's value; false when none",
        '    case "$1:$2" in',
    ]
    for name, opts in [(c["name"], c["options"]) for c in cmds] + [
            (n, [{"opts": ["-" + o["letter"]], "flag": not o["arg"], "choices": [], "value": o["value"]}
                 for o in c["options"]]) for n, c in classic_model().items()]:
        for o in opts:
            if o["flag"] or (not o.get("choices") and o.get("value", "none") == "none"):
                continue
            pattern = "|".join(f"{name}:{x}" for x in o["opts"])
            if o.get("choices"):
                action = f'COMPREPLY=($(compgen -W "{" ".join(o["choices"])}" -- "$3"))'
            else:
                action = f'_vcli_store {o["value"]}s "$3"'
            lines.append(f"        {pattern}) {action} ;;")
    lines += [
        "        *) return 1 ;;",
        "    esac",
        "}",
        "",
        "_vcli_classic() {",
        '    local cur; cur="$(_vcli_cur)"',
        "    _vcli_store_opts=()",
        "    local opts='' kind=none",
        '    case "${COMP_WORDS[0]##*/}" in',
    ]
    for name, c in classic_model().items():
        lines.append(f'        {name}) opts="{" ".join("-" + o["letter"] for o in c["options"])}"; kind={c["kind"]} ;;')
    lines += [
        "    esac",
        '    _vcli_value "${COMP_WORDS[0]##*/}" "${COMP_WORDS[COMP_CWORD-1]}" "$cur" && return',
        '    if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); return; fi',
        '    _vcli_arg "$kind" "$cur"',
        "}",
        f"complete -o default -F _vcli_classic {' '.join(CLASSIC)}",
        "",
        "_vcli_checkpw() {  # options of vcheckpassword, then a program and its arguments",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in',
        f'            {"|".join(o for o, v, _ in _checkpw_opts() if v)}) ((i++)) ;;',
        "            --*) ;;",
        "            *) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;",
        "        esac",
        "    done",
        '    if [[ "${COMP_WORDS[0]##*/}" == vcheckpassword && "$cur" == -* ]]; then',
        f'        COMPREPLY=($(compgen -W "{" ".join(o for o, _, _ in _checkpw_opts())}" -- "$cur")); return',
        "    fi",
        '    COMPREPLY=($(compgen -c -- "$cur"))',
        "}",
        f"complete -o default -F _vcli_checkpw {' '.join(CHECKPW)}",
        "",
    ]
    return "\n".join(lines)


def _checkpw_opts():
    from .checkpw import CHECKPASSWORD_OPTIONS

    return CHECKPASSWORD_OPTIONS


def _words(cmd: dict) -> str:
    return " ".join(o for opt in cmd["options"] for o in opt["opts"])


def zsh() -> str:
    return ("#compdef vcli " + " ".join(CLASSIC + CHECKPW) + "\n"
            "# zsh completion for vcli: the bash functions through zsh's bashcompinit\n"
            "# generated by `python -m vcli.cli.gendocs`; do not edit\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash())


def fish() -> str:
    model = app_model()
    cmds = [c for c in model[1:] if " " not in c["name"]]
    out = ["# fish completion for vcli and the classic vpopmail command names",
           "# generated by `python -m vcli.cli.gendocs`; do not edit",
           "complete -c vcli -f"]
    for opt in model[0]["options"]:
        out.append(_fish_opt("vcli", "__fish_use_subcommand", opt))
    for c in cmds:
        out.append(f"complete -c vcli -n __fish_use_subcommand -a {c['name']} -d {_q(_first(c['help']))}")
        cond = f"'__fish_seen_subcommand_from {c['name']}'"
        for opt in c["options"]:
            out.append(_fish_opt("vcli", cond, opt))
        kind = arg_kind(c["args"])
        if kind != "none":
            out.append(f"complete -c vcli -n {cond} -a {_fish_dyn(kind)}")
    for name, c in classic_model().items():
        out.append(f"complete -c {name} -f")
        for o in c["options"]:
            out.append(f"complete -c {name} -s {o['letter']}" + (" -r" if o["arg"] else "")
                       + (f" -a {_fish_dyn(o['value'])}" if o["value"] != "none" else "")
                       + (f" -d {_q(o['help'])}" if o["help"] else ""))
        if c["kind"] != "none":
            out.append(f"complete -c {name} -a {_fish_dyn(c['kind'])}")
    for name in CHECKPW:
        out.append(f"complete -c {name} -x -a '(__fish_complete_subcommand)'")
    for o, v, h in _checkpw_opts():
        out.append(f"complete -c vcheckpassword -n 'not __fish_seen_subcommand_from (__fish_complete_subcommand)' "
                   f"-l {o[2:]}" + (" -r" if v else "") + f" -d {_q(h)}")
    return "\n".join(out) + "\n"


def _fish_dyn(kind: str) -> str:
    what = {"address": "addresses", "domain": "domains", "target": "domains"}[kind]
    extra = "; vcli-complete addresses (commandline -ct)" if kind == "target" else ""
    return f"'(vcli-complete {what} (commandline -ct){extra})'"


def _fish_opt(cmd: str, cond: str, opt: dict) -> str:
    parts = [f"complete -c {cmd} -n {cond}"]
    for o in opt["opts"]:
        if o.startswith("--"):
            parts.append(f"-l {o[2:]}")
        elif len(o) == 2:
            parts.append(f"-s {o[1]}")
    if not opt["flag"]:
        parts.append("-r")
        if opt.get("choices"):
            parts.append("-a " + _q(" ".join(opt["choices"])))
        elif opt.get("value", "none") != "none":
            parts.append(f"-a {_fish_dyn(opt['value'])}")
    if opt["help"]:
        parts.append(f"-d {_q(opt['help'])}")
    return " ".join(parts)


def _q(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first(text: str) -> str:
    return text.strip().split("\n", 1)[0]


# --- man pages ------------------------------------------------------------------------

def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln if ln[:1] in (".", "'") else ln) for ln in text.split("\n"))


def _th(name: str, section: int, title: str) -> list[str]:
    return [f'.TH {name.upper()} {section} "" "vcli {VERSION}" "{title}"']


def _exit_status() -> list[str]:
    out = [".SH EXIT STATUS"]
    for code, meaning in EXIT_CODES:
        out += [".TP", f".B {code}", _roff(meaning)]
    return out


def man_vcli() -> str:
    model = app_model()
    out = _th("vcli", 1, "User Commands") + [
        ".SH NAME", "vcli \\- manage a vpopmail store from shells, cron and over vpopmaild",
        ".SH SYNOPSIS", ".B vcli", "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION", _roff(model[0]["help"]),
        _roff("Each command also runs under its classic name (vadduser, vmoduser, ...) with vpopmail's arguments."),
        ".SH OPTIONS"]
    out += _options_roff(model[0]["options"])
    out.append(".SH COMMANDS")
    for c in model[1:]:
        args = " ".join(f"[\\fI{a.upper()}\\fR]" for a in c["args"])
        out += [".SS " + _roff(f"vcli {c['name']}") + (f" {args}" if args else ""), _roff(c["help"] or " ")]
        out += _options_roff([o for o in c["options"] if o["opts"] != ["-h", "--help"]])
    out += _exit_status()
    out += [".SH ENVIRONMENT", _roff("VPOPMAIL_DIR, QMAIL_DIR, VCLI_CONFIG, VCLI_REMOTE, VCLI_LOGIN, "
                                     "VCLI_PASSWORD, VCLI_PROFILE, VCLI_LOCK_WAIT, VCLI_HASH, VCLI_CLEAR_PASSWORDS; "
                                     "see vcli.conf(5)."),
            ".SH SEE ALSO", ", ".join(f"\\fB{n}\\fR(1)" for n in CLASSIC) + ", \\fBvpopmaild\\fR(8), "
            "\\fBvcli.conf\\fR(5)"]
    return "\n".join(out) + "\n"


def _options_roff(options: list[dict]) -> list[str]:
    out = []
    for o in options:
        names = ", ".join(f"\\fB{_roff(x)}\\fR" for x in o["opts"])
        if not o["flag"]:
            names += f" \\fI{_roff(o['metavar'] or 'VALUE')}\\fR"
        out += [".TP", names, _roff(o["help"] or " ")]
    return out


def man_classic(name: str) -> str:
    c = classic_model()[name]
    first = c["usage"].splitlines()[0]
    synopsis = first.split(":", 1)[1].replace("usage:", "").strip() if ":" in first else first
    out = _th(name, 1, "User Commands") + [
        ".SH NAME", f"{name} \\- {_roff(_classic_purpose(name))}",
        ".SH SYNOPSIS", f".B {name}", _roff(synopsis.replace(name, "").strip()),
        ".SH DESCRIPTION", _roff(f"The classic vpopmail command, run by vcli on the local store (it works "
                                 f"on {LOCAL_ONLY[name]}, which vpopmaild does not serve). The same as vcli "
                                 f"{name}." if name in LOCAL_ONLY else
                                 f"The classic vpopmail command, run by vcli on the local store or, with "
                                 f"VCLI_REMOTE, over vpopmaild. The same as vcli {name}."),
        ".SH OPTIONS"]
    for o in c["options"]:
        text = o["help"]
        if name == "vmoduser" and o["letter"] in F.BY_LETTER:
            f = F.BY_LETTER[o["letter"]]
            text = f"{f.help}: sets {f.name} (bit {f.bit}, vuserinfo: {f.label})"
        arg = "[\\fILEN\\fR]" if o["optional"] else (" \\fIARG\\fR" if o["arg"] else "")
        out += [".TP", f"\\fB\\-{o['letter']}\\fR" + arg, _roff(text or " ")]
    out += _exit_status()
    out += [".SH SEE ALSO", "\\fBvcli\\fR(1)"]
    return "\n".join(out) + "\n"


def _classic_purpose(name: str) -> str:
    from .ipmap import PURPOSE as IP_PURPOSE
    from .smalltools import PURPOSE

    return PURPOSE.get(name) or IP_PURPOSE.get(name) or {
        "vadduser": "add a user", "vdeluser": "delete a user", "vmoduser": "change users and their flags",
        "vuserinfo": "show users", "vpasswd": "change a password", "vsetuserquota": "set quotas",
        "vadddomain": "add a domain", "vdeldomain": "delete a domain", "vdominfo": "show domains",
        "valias": "list, add and delete aliases", "vaddaliasdomain": "add an alias domain",
        "vmoddomlimits": "show and set a domain's limits and default quotas",
        "vdeloldusers": "delete users who have not logged in for a while",
        "vpopbull": "deliver a bulletin to every user of domains",
    }[name]


def man_checkpw(name: str) -> str:
    from .checkpw import CHECKPASSWORD_OPTIONS, CODES, MAX_INPUT

    which = 0 if name == "vchkpw" else 1
    opts = "[\\fIOPTIONS\\fR] " if which else ""
    out = _th(name, 8, "System Manager's Manual") + [
        ".SH NAME", f"{name} \\- {'vpopmail' if not which else 'checkpassword'} authentication of a vpopmail login",
        ".SH SYNOPSIS", f".B {name}", f"{opts}\\fIPROGRAM\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION", _roff(
            f"The checkpassword interface: reads login NUL password NUL timestamp NUL (at most {MAX_INPUT} "
            "bytes) from file descriptor 3, checks the password with crypt(3) against the user's vpasswd "
            "entry and refuses a service closed by the user's flags (or the domain's limits): no_pop, no_imap, "
            "no_smtp, no_webmail. The service is the one of TCPLOCALPORT (25, 465, 587 SMTP; 110, 995 POP; 143, "
            "993 IMAP), else of SERVICE (set by Dovecot), else of PROGRAM's name (containing true: SMTP; imap: "
            "IMAP; else POP); POP or IMAP from TCPREMOTEIP 127.0.0.1 is webmail. A login without @ is in the "
            "default domain. On success lastauth is set to TCPREMOTEIP and, except for SMTP, the process takes "
            "the domain's uid and gid, changes to the user's directory and re-creates a missing Maildir "
            "(with SERVICE set, for Dovecot, it sets userdb_uid, userdb_gid and EXTRA instead of changing "
            "ids); then it runs PROGRAM with USER, HOME, SHELL=NOLOGIN and VPOPUSER (the login as given) "
            "set. A failed login waits VCLI_AUTH_FAIL_DELAY seconds (default 2) before exiting."),
        ".PP", _roff("qmail: qmail-popup host vchkpw qmail-pop3d Maildir; SMTP AUTH patches: vchkpw /bin/true; "
              "Dovecot: passdb { driver = checkpassword args = /usr/local/bin/vcheckpassword } (Dovecot "
              "reads the standard's codes, which vcheckpassword has; userdb lookups, AUTHORIZED=1, are not "
              "supported: use the prefetch userdb).")]
    if which:
        out += [".PP", _roff(
            "With --remote or --profile the password is checked by one clogin to a vpopmaild (ours or the "
            "real one), so the machine needs neither the user database nor root: HOME comes from the login "
            "reply and the flags checked are the user's own (gidflags, not the domain's limits); lastauth is "
            "not written and ids are not changed. A daemon that is down, or answers nothing within --timeout, "
            "is a temporary failure (111), never a refusal. Also vcli checkpassword, which starts slower."),
            ".SH OPTIONS"]
        for o, v, h in CHECKPASSWORD_OPTIONS:
            out += [".TP", f"\\fB{_roff(o)}\\fR" + (f" \\fI{_roff(v)}\\fR" if v else ""), _roff(h)]
    meaning = {"input": f"fd 3 missing, unreadable, over {MAX_INPUT} bytes, or without the NUL separators",
               "usage": "no PROGRAM, or a bad option", "empty_login": "empty login",
               "empty_password": "empty password", "bad_chars": "invalid characters in the login",
               "unknown": "unknown user or domain", "bad_password": "wrong password",
               "no_password": "the user has no password", "flag": "the service is closed by a flag",
               "setgid": "setgid failed", "setuid": "setuid failed",
               "chdir": "cannot enter the user's directory or create its Maildir",
               "temp": "temporary failure: the store cannot be read, the vpopmaild is down or silent"}
    by_code: dict[int, list[str]] = {}
    for kind, codes in CODES.items():
        by_code.setdefault(codes[which], []).append(meaning[kind])
    out += [".SH EXIT STATUS", ".TP", ".B 0", _roff("the login is good: PROGRAM replaces the process, so its own status is seen "
                                                "(a PROGRAM that cannot be run is 111)")]
    for code in sorted(by_code):
        out += [".TP", f".B {code}", _roff("; ".join(by_code[code]))]
    out += [".SH SEE ALSO", "\\fBvcli\\fR(1), \\fBvpopmaild\\fR(8), \\fBtcpserver\\fR(1)"]
    return "\n".join(out) + "\n"


# classic tools that read lastauth files or write Maildirs: the local store only
LOCAL_ONLY = {"vdeloldusers": "lastauth files", "vpopbull": "Maildirs"}


def man_vpopmaild() -> str:
    from ..daemon.cli import build_parser

    p = build_parser()
    out = _th("vpopmaild", 8, "System Manager's Manual") + [
        ".SH NAME", "vpopmaild \\- vpopmaild\\-compatible server on the local vpopmail store",
        ".SH SYNOPSIS", ".B vpopmaild", "[\\fIOPTIONS\\fR]", ".SH DESCRIPTION", _roff(p.description or ""),
        ".SH OPTIONS"]
    for a in p._actions:
        if not a.option_strings:
            continue
        names = ", ".join(f"\\fB{_roff(x)}\\fR" for x in a.option_strings)
        if a.nargs != 0:
            names += f" \\fI{_roff(a.metavar or a.dest.upper())}\\fR"
        out += [".TP", names, _roff(a.help or " ")]
    out += [".SH SEE ALSO", "\\fBvcli\\fR(1), \\fBtcpserver\\fR(1)"]
    return "\n".join(out) + "\n"


def man_conf() -> str:
    from ..config import _SETTINGS_ENV

    out = _th("vcli.conf", 5, "File Formats") + [
        ".SH NAME", "vcli.conf \\- vcli configuration file",
        ".SH DESCRIPTION", _roff("A TOML file: $VCLI_CONFIG, else /etc/vcli/config.toml for root, else "
                                 "~/.config/vcli/config.toml. Settings at top level (or under [store]); "
                                 "each also comes from its environment variable, which wins; both win over what the site's "
                                 "~vpopmail/include/vpopmail_config.h says. An unknown key, "
                                 "and a $VCLI_CONFIG file that does not exist, are errors (exit 78)."),
        ".SH SETTINGS"]
    for key, (env, _typ) in _SETTINGS_ENV.items():
        out += [".TP", f"\\fB{_roff(key)}\\fR (\\fB{_roff(env)}\\fR)", _roff(CONFIG_HELP[key])]
    out += [".SH PROFILES", _roff("[profiles.NAME] tables name remote daemons for --profile NAME:")]
    for key, text in PROFILE_HELP.items():
        out += [".TP", f"\\fB{key}\\fR", _roff(text)]
    out += [".SH SEE ALSO", "\\fBvcli\\fR(1)"]
    return "\n".join(out) + "\n"


def generated() -> dict[str, str]:
    files = {
        "completions/vcli.bash": bash(),
        "completions/_vcli": zsh(),
        "completions/vcli.fish": fish(),
        "man/vcli.1": man_vcli(),
        "man/vpopmaild.8": man_vpopmaild(),
        "man/vcli.conf.5": man_conf(),
    }
    for name in CLASSIC:
        files[f"man/{name}.1"] = man_classic(name)
    for name in CHECKPW:
        files[f"man/{name}.8"] = man_checkpw(name)
    return files


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    drift = []
    for rel, text in generated().items():
        path = os.path.join(REPO, rel)
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current == text:
            continue
        if "--check" in args:
            drift.append(rel)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {rel}")
    if drift:
        print("out of date (run python -m vcli.cli.gendocs): " + ", ".join(drift), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
