"""A private Dovecot authenticating vpopmail users from SQL, as a site's IMAP/POP front end does.

Debian's dovecot-core + dovecot-mysql/-pgsql, nothing from /etc/dovecot: a dovecot.conf of our own
with `protocols =` (no IMAP/POP/LMTP service, so no network listener at all), base_dir/state_dir
and the log in a short temporary directory (unix socket paths are limited to 107 bytes), and the
`sql` passdb + userdb reading a driver-args file that points at the test database.

The minimal working way to ask it: `dovecot -F -c CONF` in the background (the master starts
the auth service with its unix sockets in base_dir only), then `doveadm -c CONF auth test USER PW`
(passdb, over base_dir/auth-client) and `doveadm -c CONF user -u USER` (userdb only,
over base_dir/auth-userdb: without -u doveadm also opens the mail storage, which this config has not).  `doveadm auth test` alone cannot run the passdb: it always needs an auth
process to talk to.  auth_cache_size stays 0 (the default), so every test asks the database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

# The password_query of a real vpopmail site (vpopmail's doc/README.sql-aliasdomains.md shape):
# user as pw_name@pw_domain, pw_passwd as CRYPT, pw_dir as home; an alias domain resolved through
# aliasdomains (alias -> domain, spec/sql.md §3.2, §6).  Dovecot escapes %n/%d for the driver.
WHERE = ("WHERE pw_name='%n' AND (pw_domain='%d' OR "
         "pw_domain=(SELECT domain FROM aliasdomains WHERE alias='%d'))")
QUERIES = {
    "mysql": (f"SELECT CONCAT(pw_name,'@',pw_domain) AS user, pw_passwd AS password, pw_dir AS userdb_home, "
              f"89 AS userdb_uid, 89 AS userdb_gid FROM vpopmail {WHERE}",
              f"SELECT pw_dir AS home, 89 AS uid, 89 AS gid FROM vpopmail {WHERE}"),
    # PostgreSQL: `user` is a reserved word, || concatenates
    "pgsql": (f"SELECT pw_name||'@'||pw_domain AS \"user\", pw_passwd AS password, pw_dir AS userdb_home, "
              f"89 AS userdb_uid, 89 AS userdb_gid FROM vpopmail {WHERE}",
              f"SELECT pw_dir AS home, 89 AS uid, 89 AS gid FROM vpopmail {WHERE}"),
}


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


class Dovecot:
    """`with Dovecot(db) as dv:` a running private dovecot whose sql passdb/userdb read `db`
    (a tests.sqlservers.Database, kind mysql or pgsql)."""

    def __init__(self, db, password_query: str | None = None, user_query: str | None = None):
        for binary in ("dovecot", "doveadm"):
            if not (shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")):
                raise RuntimeError(f"{binary} not found: install Debian's dovecot-core (.ci/run does)")
        driver = f"/usr/lib/dovecot/modules/auth/libdriver_{db.kind}.so"
        if not os.path.exists(driver):
            raise RuntimeError(f"{driver} missing: install Debian's dovecot-{db.kind} (.ci/run does)")
        self.db = db
        self.dir = tempfile.mkdtemp(prefix="vcli-dove-")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.log = os.path.join(self.dir, "dovecot.log")
        pq, uq = QUERIES[db.kind]
        connect = f"host={db.host} port={db.port} dbname={db.database} user={db.user} password={db.password}"
        with open(os.path.join(self.dir, "sql.conf.ext"), "w") as f:
            f.write(f"driver = {db.kind}\nconnect = {connect}\ndefault_pass_scheme = CRYPT\n"
                    f"password_query = {password_query or pq}\nuser_query = {user_query or uq}\n")
        os.chmod(os.path.join(self.dir, "sql.conf.ext"), 0o600)
        users = "" if os.geteuid() == 0 else f"default_internal_user = {_me()}\ndefault_login_user = {_me()}\n"
        os.makedirs(os.path.join(self.dir, "state"))
        with open(self.conf, "w") as f:
            f.write(f"protocols =\nbase_dir = {self.dir}/run\nstate_dir = {self.dir}/state\n"
                    f"log_path = {self.log}\nssl = no\nauth_mechanisms = plain\ndisable_plaintext_auth = no\n"
                    "auth_failure_delay = 0\n"  # a refusal answers at once (default: 2 s later)
                    # no anvil penalty socket = no auth penalty: after a refusal Dovecot would
                    # otherwise hold the next attempt from the same (here: no) IP for 2-15 s
                    "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n"
                    f"{users}"
                    f"passdb {{\n  driver = sql\n  args = {self.dir}/sql.conf.ext\n}}\n"
                    f"userdb {{\n  driver = sql\n  args = {self.dir}/sql.conf.ext\n}}\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Dovecot:
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        sock = os.path.join(self.dir, "run", "auth-client")
        deadline = time.monotonic() + 15
        while not os.path.exists(sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                self.stop()
                raise RuntimeError(f"dovecot did not come up: {err.strip()} {self.log_text()[-1500:]}")
            time.sleep(0.05)
        return self

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def doveadm(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["doveadm", "-c", self.conf, *argv], capture_output=True, text=True, timeout=30)

    def auth(self, user: str, password: str) -> tuple[bool, str]:
        """passdb: (authenticated?, the user name Dovecot settled on). doveadm exits 0 on success,
        77 (EX_NOPERM) on a refusal; anything else is a broken harness and fails the test."""
        r = self.doveadm("auth", "test", user, password)
        if r.returncode not in (0, 77) or r.stderr:
            raise AssertionError(f"doveadm auth test {user}: exit {r.returncode}: {r.stderr.strip()}\n"
                                 f"{self.log_text()[-1500:]}")
        fields = dict(ln.strip().split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
        return r.returncode == 0, fields.get("user", "")

    def home(self, user: str) -> str | None:
        """userdb: the home Dovecot gives `user`, None when it knows no such user."""
        r = self.doveadm("user", "-u", user)  # -u: the userdb only (no mail storage to open)
        if r.returncode == 67:  # EX_NOUSER: "userdb lookup: user ... doesn't exist"
            return None
        if r.returncode or r.stderr:
            raise AssertionError(f"doveadm user {user}: exit {r.returncode}: {r.stderr.strip()}")
        fields = dict(ln.strip().split(None, 2)[::2] for ln in r.stdout.splitlines()[1:] if " : " in ln)
        return fields.get("home")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
