"""The smaller vpopmail programs (issue 12 item 7): vverifypw, vmkpasswd, vchangepw, vmakedotqmail,
dotqmail2valias, vrcptcheck and vusagec, under their classic names and arguments.

Like classic.py: getopt-style argv, the C tools' output on stdout, errors as one line on stderr
(the C tools print them on stdout), exit statuses as the C tools have them (spec/tools.md §0).
No typer here: vrcptcheck runs once per RCPT TO.
"""

from __future__ import annotations

import os
import sys

from ..errors import IllegalUsername, StoreIOError, UsageError, VcliError
from . import actions as A
from .classic import Getopt, _classic_status, _usage_exit, _version
from .common import guard_std_fds, open_store, print_lines, run, warn

OPTSTRINGS = {
    "vverifypw": "hve",
    "vmkpasswd": "",
    "vchangepw": "",
    "vmakedotqmail": "aAu:d:q:orth",
    "dotqmail2valias": "avd",
    "vrcptcheck": "",
    "vusagec": "",
}
ARGUMENTS = {
    "vverifypw": "address", "vmkpasswd": "domain", "vchangepw": "none", "vmakedotqmail": "none",
    "dotqmail2valias": "domain", "vrcptcheck": "none", "vusagec": "address",
}
# option values that name something in the store (for the completions)
VALUES = {("vmakedotqmail", "d"): "domain"}
PURPOSE = {
    "vverifypw": "check a user's password",
    "vmkpasswd": "rebuild a domain's vpasswd.cdb from vpasswd",
    "vchangepw": "let a user change his own password, on a terminal",
    "vmakedotqmail": "install control/defaultdelivery as users' .qmail, or rewrite .qmail-default",
    "dotqmail2valias": "convert .qmail-<alias> files to valias entries (valias builds only)",
    "vrcptcheck": "recipient check for qmail-smtpd's RCPTCHECK / recipients extension",
    "vusagec": "show the disk usage of users and domains",
}

USAGE = {
    "vverifypw": """\
vverifypw: usage: [options] [email_addr] [password] (asked for when not given)
options: -h ( show this help )
options: -v ( print the version number )
options: -e ( the password given is the stored crypt(3) hash )
""",
    "vmkpasswd": """\
vmkpasswd: usage: domain
Rebuilds the domain's vpasswd.cdb from its vpasswd file.
""",
    "vchangepw": """\
vchangepw: usage: vchangepw
Asks for the address, the old password and the new one twice (on the terminal).
""",
    "vmakedotqmail": """\
Usage: vmakedotqmail [option] [argument]
options: -u <username@domain>  copy control/defaultdelivery to the .qmail of this user
         -d <domain>           the same for every user of the domain
         -A                    the same for every user of every domain
         -o (overwrite)        replace existing .qmail files too (with -A, -d, -u)
         -r (reverse)          remove the users' .qmail files instead (with -A, -d, -u)
         -q [default|argument] rewrite the .qmail-default of the -d domain, or of all (-A):
                               'default' = vdelivermail with delete, else the line given
         -t (testing mode)     report only, change nothing
         -h                    this help
Existing .qmail files are kept unless -o is given.
""",
    "dotqmail2valias": """\
usage: dotqmail2valias [options] [domainlist]
  Converts the .qmail-<alias> files of the domains named to valias entries.
  Options:
    -a = convert all domains
    -v = version
    -d = debug info
""",
    "vrcptcheck": """\
vrcptcheck: usage: vrcptcheck 3<recipient
Reads the recipient address from file descriptor 3 and exits 0 when it exists,
1 when it does not, 111 on a temporary problem.
""",
    "vusagec": "Usage: vusagec <email|@domain> [...]\n",
}


def _read_line(prompt: str) -> str | None:
    """A line from stdin after a prompt on stdout (the C tools' fgets); None at end of input."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline() if sys.stdin else ""
    if not line:
        return None
    return line.rstrip("\r\n")


def _getpass(prompt: str) -> str:
    """getpass(3): on the terminal without echo; without one, the prompt on stderr and a line of stdin."""
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return (sys.stdin.readline() if sys.stdin else "").rstrip("\r\n")


def _syslog(priority: str, text: str) -> None:
    """vchangepw logs to syslog (LOG_AUTH) as the C tool does; no syslog is no error."""
    try:
        import syslog

        syslog.openlog("vchangepw", 0, syslog.LOG_AUTH)
        syslog.syslog(getattr(syslog, priority), text)
        syslog.closelog()
    except (ImportError, OSError):
        pass


# --- vverifypw ------------------------------------------------------------------------


AUTH_FAILED = "authentication failed!"


def password_matches(store, user: str, domain: str, password: str, encrypted: bool = False) -> bool:
    """The check of vverifypw and vchangepw: the user exists and the password opens the account
    (with `encrypted`, the text given is the stored hash itself)."""
    import hmac

    from ..store.passwords import verify_password

    u = store.find_user(user, domain)
    if u is None or not u.passwd:
        return False
    if encrypted:
        return hmac.compare_digest(password.encode("utf-8", "surrogateescape"),
                                   u.passwd.encode("utf-8", "surrogateescape"))
    return verify_password(password, u.passwd)


def vverifypw_main(argv: list[str]) -> int:
    opts, pos, bad = Getopt("vverifypw", OPTSTRINGS["vverifypw"], on_unknown="usage").parse(argv)
    if bad:
        return _usage_exit(USAGE["vverifypw"])
    for o, _ in opts:  # in the order given: -v prints, -h shows the help and ends
        if o == "h":
            sys.stdout.write(USAGE["vverifypw"])
            return 0
        if o == "v":
            _version([("v", None)])
    address = pos[0] if pos and pos[0] else _read_line("Please enter the email address: ")
    if not address:
        raise A.ClassicError("no email address entered", 255)
    password = pos[1] if len(pos) > 1 and pos[1] else _getpass("Enter password: ")
    store = open_store()
    user, domain = store.parse_address(address)
    if not password_matches(store, user, domain, password, encrypted=any(o == "e" for o, _ in opts)):
        raise A.ClassicError(AUTH_FAILED, 255)
    print("User authenticated.")
    return 0


# --- vmkpasswd ------------------------------------------------------------------------


def rebuild_cdb(store, domain: str) -> str:
    """vmkpasswd: an unknown domain exits 253 as the C tool's failed chdir does (silently, there)."""
    domain = domain.lower()
    A._local_store(store, "vmkpasswd")
    if store.find_domain(domain) is None:
        raise A.ClassicError(f"Domain does not exist: {domain}", 253)
    path = store.rebuild_cdb(domain)
    if not path:  # an SQL site: the server keeps the index of the table
        print(f"vmkpasswd: nothing to rebuild: {domain}'s users are in the {store.auth.name} database",
              file=sys.stderr)
    return path


def vmkpasswd_main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0]:
        return _usage_exit(USAGE["vmkpasswd"])
    rebuild_cdb(open_store(), argv[0])
    return 0


# --- vchangepw ------------------------------------------------------------------------


def vchangepw_main(argv: list[str]) -> int:
    """Exit 0 changed (or no address entered), 3 old password wrong / unknown user / too long,
    255 illegal address or the change refused (NO_PASSWD_CHNG, as vpasswd), strength codes."""
    from ..store.passwords import MAX_CLEAR

    email = _read_line("Please enter the email address: ")
    if email is None:
        print()
        return 0
    print(email)
    store = open_store()
    user, domain = store.parse_address(email)
    old = _getpass("Enter old password: ")
    if len(old) >= MAX_CLEAR:
        _syslog("LOG_NOTICE", f"Too long password for user <{email}>")
        raise A.ClassicError("password too long.", 3)
    if not password_matches(store, user, domain, old):
        _syslog("LOG_NOTICE", f"Wrong password for user <{email}>")
        raise A.ClassicError(AUTH_FAILED, 3)
    while True:
        new = _getpass(f"Please enter password for {email}: ")
        again = _getpass("enter password again: ")
        if new == again:
            break
        if not sys.stdin.isatty():  # no terminal: a second try cannot come from anywhere else
            raise A.ClassicError("Passwords do not match", 255)
        print("Passwords do not match, try again", flush=True)
    try:
        A.set_password(store, f"{user}@{domain}", new)
    except VcliError as exc:
        _syslog("LOG_NOTICE", f"Error changing users password! User <{email}>, message: {exc.message}")
        raise
    _syslog("LOG_DEBUG", f"User <{email}> changed password")
    print("Password successfully changed.")
    return 0


# --- vmakedotqmail --------------------------------------------------------------------


class _DotQmail:
    """vmakedotqmail's run: the options, and the outcome word of each mailbox."""

    def __init__(self, store, overwrite: bool, reverse: bool, testing: bool):
        self.store, self.overwrite, self.reverse, self.testing = store, overwrite, reverse, testing
        self.teststr = "**TESTING** " if testing else ""
        self._delivery: bytes | None = None

    def delivery(self) -> bytes:
        if self._delivery is None:
            from ..store.fsutil import read_bytes

            path = self.store.qmail.path("control", "defaultdelivery")
            data = read_bytes(path)
            if data is None:
                raise A.ClassicError(f"missing {path}: create it, e.g. echo \"| {self.store.root}/bin/vdelivermail "
                                     f"'' delete\" > {path}", 255)
            self._delivery = data
        return self._delivery

    def mailbox(self, address: str) -> list[str]:
        user, domain = self.store.parse_address(address)
        if not domain:
            raise A.ClassicError("missing domain", 255, prefix="")
        u = self.store.find_user(user, domain)
        if u is None:
            raise A.ClassicError(f"no such user {user}@{domain}", 255, prefix="")
        return [f"{self.teststr}{address} {self._one(u)}"]

    def _one(self, u) -> str:
        from ..store.fsutil import Owner, atomic_write, remove_file

        path = os.path.join(u.dir, ".qmail")
        if not self.reverse and b"vdelivermail" in self.delivery():
            return "SKIP (control/defaultdelivery already has vdelivermail)"
        exists = os.path.lexists(path)
        if self.reverse:
            if not exists:
                return "SKIP (no .qmail)"
            if not self.testing:
                try:
                    remove_file(path)
                except OSError as exc:
                    raise A.ClassicError(f"Unable to remove {path}: {exc.strerror}", 255, prefix="") from None
            return "REMOVED existing .qmail"
        if exists and not self.overwrite:
            return "SKIP (.qmail already exists)"
        if not self.testing:
            st = os.stat(u.dir)
            try:
                atomic_write(path, self.delivery(), 0o600, Owner(st.st_uid, st.st_gid))
            except OSError as exc:
                raise A.ClassicError(f"Could not open {path}: {exc.strerror}", 237, prefix="") from None
        return "DONE (existing .qmail overwritten)" if exists else "DONE"

    def domain(self, domain: str, check: bool, lda: str | None) -> list[str]:
        bar = "=" * 66
        domain = domain.lower()
        if check and self.store.find_domain(domain) is None:
            raise A.ClassicError(f"Domain {domain} does not exist", 255)
        out = [bar, f"Domain: {domain}", ""]
        if lda is not None:
            out.append(self._dot_qmail_default(domain, lda))
        else:
            for u in list(self.store.list_users(domain)):
                out.extend(self.mailbox(f"{u.name}@{domain}"))
        return out + [bar, ""]

    def _dot_qmail_default(self, domain: str, lda: str) -> str:
        from ..store.fsutil import atomic_write

        line = f"| {self.store.root}/bin/vdelivermail '' delete" if lda == "default" else lda
        head = f'{domain}: rewriting .qmail-default: "{line}": '
        if self.testing:
            return head + "**TESTING**"
        entry = self.store.real_entry(domain)
        if lda == "default":
            self.store.set_catchall(entry.real, None, "delete")
        else:
            if any(c in lda for c in "\n\0") or not lda.strip():
                raise UsageError("-q: one non-empty .qmail line")
            from ..store.fsutil import Owner

            atomic_write(os.path.join(entry.dir, ".qmail-default"), (lda + "\n").encode(), 0o600,
                         Owner(entry.uid, entry.gid))
        return head + "DONE"

    def all_domains(self, lda: str | None) -> list[str]:
        bar = "=" * 66
        out: list[str] = []
        for e in self.store.list_domains():
            if e.is_alias:
                out += [bar, f"SKIP domain: {e.name} (alias of {e.real})", bar, ""]
            else:
                out += self.domain(e.name, False, lda)
        return out


def vmakedotqmail_main(argv: list[str]) -> int:
    opts, pos, bad = Getopt("vmakedotqmail", OPTSTRINGS["vmakedotqmail"], on_unknown="ignore").parse(argv)
    o: dict[str, str | None] = {}
    for k, v in opts:
        o["A" if k == "a" else k] = v
    if "h" in o:
        sys.stdout.write(USAGE["vmakedotqmail"])
        return 0
    if bad:
        return _usage_exit(USAGE["vmakedotqmail"])
    lda, dom, addr = o.get("q"), o.get("d"), o.get("u")
    if lda is not None and "A" not in o and dom is None:
        warn("If using -q, always pass argument -d <domain> or -A (all)")
        return _usage_exit(USAGE["vmakedotqmail"])
    if "A" not in o and dom is None and addr is None:
        return _usage_exit(USAGE["vmakedotqmail"])
    store = A._local_store(open_store(), "vmakedotqmail")
    run_ = _DotQmail(store, "o" in o, "r" in o, "t" in o)
    if "A" in o:
        lines = run_.all_domains(lda)
    elif dom is not None:
        lines = run_.domain(dom, True, lda)
    else:
        lines = run_.mailbox(addr)
    print_lines(lines)
    return 0


# --- dotqmail2valias ----------------------------------------------------------------


NO_VALIAS = ("this store has no valias table (its vpopmail was built without VALIAS): its aliases are "
             "the .qmail-<alias> files already, so there is nothing to convert")


NO_CONVERT = ("converting .qmail-<alias> files into the valias table is not in this version of vcli; "
              "`valias -i LINE ALIAS@DOMAIN` adds each line")


def dotqmail2valias_main(argv: list[str]) -> int:
    """Only a valias (SQL) build has this program: elsewhere it says so and exits 255, as the C
    program built without --enable-valias does.  On a VALIAS site the conversion itself is not
    done yet: one line saying so, 255, nothing changed."""
    s = load_settings_quiet()
    if s is not None and s.valias and s.auth_module != "cdb":
        raise A.ClassicError(NO_CONVERT, 255, prefix="dotqmail2valias: ")
    raise A.ClassicError(NO_VALIAS, 255, prefix="dotqmail2valias: ")


def load_settings_quiet():
    from ..config import load_settings
    from ..errors import VcliError

    try:
        return load_settings(announce=lambda m: None)
    except VcliError:
        return None


# --- vrcptcheck -------------------------------------------------------------------


RCPT_MAX = 512  # more than any SMTP path (RFC 5321: 256) and the checkpassword limit


def _read_fd3() -> bytes | None:
    data = b""
    try:
        while len(data) <= RCPT_MAX:
            chunk = os.read(3, RCPT_MAX + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        try:
            os.close(3)
        except OSError:
            pass
    return data


def _dot_qmail_exists(ddir: str, name: str) -> bool:
    """A .qmail-<name> of the domain (any kind: forward, list, autoresponder), or the
    .qmail-<prefix>-default that qmail-local would deliver <prefix>-<rest> with. The catch-all
    .qmail-default never counts: it would make every address exist."""
    base = name.replace(".", ":")
    if base == "default" or base.startswith("default-"):
        return False
    if os.path.lexists(os.path.join(ddir, ".qmail-" + base)):
        return True
    parts = base.split("-")
    for i in range(len(parts) - 1, 0, -1):
        if os.path.lexists(os.path.join(ddir, ".qmail-" + "-".join(parts[:i]) + "-default")):
            return True
    return False


def recipient_exists(store, address: str) -> bool:
    """What vrcptcheck accepts: a mailbox (alias domains too), a .qmail alias / list / autoresponder
    file, an autoresponder directory (<NAME>/message), or a qmail/alias entry. A bare name (no '@')
    is checked against qmail/alias only."""
    local, at, domain = address.lower().rpartition("@")
    if not at:
        local, domain = domain, ""
    if not local or "/" in local or local.startswith("."):
        return False
    if domain:
        entry = store.find_domain(domain)
        if entry is not None:
            if store.find_user(local, entry.real) is not None:
                return True
            ddir = store.real_entry(domain).dir
            if _dot_qmail_exists(ddir, local) or os.path.exists(os.path.join(ddir, local.upper(), "message")):
                return True
    alias = store.qmail.path("alias")
    return (os.path.lexists(os.path.join(alias, f".qmail-{local}-default"))
            or os.path.lexists(os.path.join(alias, f".qmail-{local}")))


def vrcptcheck_main(argv: list[str]) -> int:
    """0 the recipient exists, 1 it does not, 111 a temporary problem (fd 3 unreadable, the store
    unreadable): qmail-smtpd then answers 4xx, so no mail is bounced for a passing fault."""
    data = _read_fd3()
    if data is None:
        warn("vrcptcheck: cannot read the recipient from file descriptor 3")
        return 111
    if len(data) > RCPT_MAX:
        warn(f"vrcptcheck: recipient longer than {RCPT_MAX} bytes")
        return 1
    address = data.split(b"\0", 1)[0].strip(b"\r\n").decode("utf-8", "surrogateescape")
    if not address:
        warn("vrcptcheck: empty recipient")
        return 1
    return check_recipient(address)


def check_recipient(address: str) -> int:
    try:
        store = A._local_store(open_store(quiet=True), "vrcptcheck")
        return 0 if recipient_exists(store, address) else 1
    except StoreIOError as exc:
        warn(f"vrcptcheck: temporary failure: {exc.message}")
        return 111
    except OSError as exc:
        warn(f"vrcptcheck: temporary failure: {exc.strerror or exc}{': ' + exc.filename if exc.filename else ''}")
        return 111
    except IllegalUsername:
        return 1
    except VcliError as exc:
        warn(f"vrcptcheck: temporary failure: {exc.message}")
        return 111


# --- vusagec ------------------------------------------------------------------------


def _conf_values(text: str) -> dict[str, str]:
    """The `Server:` section of vusagec.conf: `Key = value;` lines, /* */ and // comments."""
    import re

    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out: dict[str, str] = {}
    section = None
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if line.endswith(":") and "=" not in line:
            section = line[:-1].strip().lower()
            continue
        if section == "server" and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip().lower()] = value.strip().rstrip(";").strip()
    return out


class UsageClient:
    """vusaged's query: a 2-byte big-endian length and the entry; the answer two big-endian
    64-bit counts (bytes, files), all ones = no data."""

    def __init__(self, conf: dict[str, str]):
        import socket

        timeout = conf.get("timeout", "")
        self.timeout = float(timeout) if timeout.isdigit() and int(timeout) > 0 else 1.0
        if conf.get("remote"):
            from ..backend import split_hostport

            host, port = split_hostport(conf["remote"], 189)
            self.where = f"{host}:{port}"
            self.sock = socket.create_connection((host, port), timeout=self.timeout)
        else:
            self.where = conf.get("filename") or "/tmp/vusaged.sock"
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            try:
                self.sock.connect(self.where)
            except OSError:
                self.sock.close()
                raise

    def query(self, entry: str) -> tuple[int, int] | None:
        import struct

        data = entry.encode("utf-8", "surrogateescape")[:65535]
        self.sock.sendall(struct.pack(">H", len(data)) + data)
        reply = b""
        while len(reply) < 16:
            chunk = self.sock.recv(16 - len(reply))
            if not chunk:
                raise OSError("the usage daemon closed the connection")
            reply += chunk
        size, count = struct.unpack(">QQ", reply)
        return None if size == 2**64 - 1 else (size, count)

    def close(self) -> None:
        self.sock.close()


def usage_daemon(store) -> UsageClient | None:
    """The usage daemon vusagec.conf names, when it is enabled and answers; else None (a warning
    when it is enabled but cannot be reached)."""
    try:
        with open(os.path.join(store.root, "etc", "vusagec.conf"), encoding="utf-8", errors="replace") as f:
            conf = _conf_values(f.read())
    except OSError:
        return None
    if conf.get("disable", "").lower() == "true":
        return None
    try:
        return UsageClient(conf)
    except (OSError, ValueError) as exc:
        warn(f"vusagec: usage daemon not reachable ({getattr(exc, 'strerror', None) or exc}); "
             "computing from maildirsize")
        return None


def local_usage(store, entry: str) -> tuple[int, int] | None:
    """(bytes, files) of a user or (`@domain`) of every user of a domain, from each Maildir's
    maildirsize (the Maildir itself when that is missing or unreadable); None when unknown."""
    from ..store import quota

    def one(u) -> tuple[int, int]:
        maildir = os.path.join(u.dir, "Maildir")
        return quota.read_maildirsize(maildir) or quota.usage(maildir)

    if entry.startswith("@"):
        domain = entry[1:].lower()
        if not domain or store.find_domain(domain) is None:
            return None
        size = count = 0
        for u in store.list_users(store.real_entry(domain).real):
            s, c = one(u)
            size, count = size + s, count + c
        return size, count
    try:
        user, domain = store.parse_address(entry)
    except IllegalUsername:
        return None
    u = store.find_user(user, domain) if domain else None
    return one(u) if u is not None else None


def usage_rows(store, entries: list[str], use_daemon: bool = True) -> list[dict]:
    """One row per entry: bytes and files (None: no data) and where they came from."""
    A._local_store(store, "vusagec")  # the Maildirs and vusagec.conf are on this machine
    client = usage_daemon(store) if use_daemon else None
    rows = []
    for entry in entries:
        result, source = None, "maildirsize"
        if client is not None:
            try:
                result, source = client.query(entry), "vusaged"
            except OSError as exc:
                warn(f"vusagec: usage daemon at {client.where} failed ({exc}); computing from maildirsize")
                client.close()
                client = None
        if client is None:
            result = local_usage(store, entry)
        rows.append({"entry": entry, "bytes": result[0] if result else None,
                     "files": result[1] if result else None, "source": source})
    if client is not None:
        client.close()
    return rows


def usage_lines(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["bytes"] is None:
            out.append(f"{r['entry']}: No data available")
        else:
            name = r["entry"][1:] if r["entry"].startswith("@") else r["entry"]
            out.append(f"{name}: {r['bytes']} byte(s) in {r['files']} file(s)")
    return out


def vusagec_main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write(USAGE["vusagec"])
        return 1
    print_lines(usage_lines(usage_rows(open_store(), argv)))
    return 0


# --- entry points -----------------------------------------------------------------


MAINS = {name: _classic_status(fn) for name, fn in {
    "vverifypw": vverifypw_main,
    "vmkpasswd": vmkpasswd_main,
    "vchangepw": vchangepw_main,
    "vmakedotqmail": vmakedotqmail_main,
    "dotqmail2valias": dotqmail2valias_main,
    "vrcptcheck": vrcptcheck_main,
    "vusagec": vusagec_main,
}.items()}


def _entry(name: str):
    def main(argv: list[str] | None = None) -> None:
        args = sys.argv[1:] if argv is None else argv
        if name == "vrcptcheck":  # fd 3 is the input: guard_std_fds must not be what opens it
            try:
                os.fstat(3)
            except OSError:
                warn("vrcptcheck: cannot read the recipient from file descriptor 3")
                sys.exit(111)
        guard_std_fds()
        code = run(lambda: MAINS[name](args))
        if name == "vrcptcheck" and code not in (0, 1):  # any failure of ours is temporary for qmail-smtpd
            code = 111
        sys.exit(code)

    main.__name__ = name
    return main


vverifypw = _entry("vverifypw")
vmkpasswd = _entry("vmkpasswd")
vchangepw = _entry("vchangepw")
vmakedotqmail = _entry("vmakedotqmail")
dotqmail2valias = _entry("dotqmail2valias")
vrcptcheck = _entry("vrcptcheck")
vusagec = _entry("vusagec")
