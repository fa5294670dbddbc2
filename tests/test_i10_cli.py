"""Issue 10, the command-line items: each test runs the installed commands as subprocesses (and,
for item 19, a real daemon over a socket) and names its item number."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from cli_helpers import CliStore, tool, verify
from daemon_helpers import Daemon
from storeenv import BASH_COMPLETE, make_env
from storeenv import run as env_run

from vcli.cli import gendocs
from vcli.config import PROFILE_KEYS

D = "example.test"
HASH6 = "$6$saltsalt$" + "h" * 86
DES = "abJnggxhB/yWI"

# the checkout holding this test (the site stage runs an installed, non-editable vcli)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def st(base):
    """example.test with postmaster and bob, and *no* password_strength.conf: vpopmail then has
    no policy to refuse an empty password, which is where the holes of item 5 were."""
    s = CliStore(base)
    s.call_ok("vadddomain", D, "Pm-pass1")
    s.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    (s.vp / "etc" / "password_strength.conf").unlink()
    return s


def test_i10_05_empty_passwords_and_bad_hashes_are_refused(st, tmp_path):
    """Item 5: every way of giving an empty password (or a non-hash as a hash) is refused with one
    line and changes nothing, on the classic names and the vcli subcommands."""
    empty = tmp_path / "empty"
    empty.write_text("")
    asked = "Please enter password for {}: enter password again: Error: No password entered\n"
    cases = [
        (["vadduser", "ann@example.test", ""], 255, asked.format("ann@example.test")),
        (["vcli", "vadduser", "ann@example.test", ""], 255, asked.format("ann@example.test")),
        (["vadduser", "-e", "", "ann@example.test"], 255, asked.format("ann@example.test")),
        (["vcli", "vadduser", "-e", "", "ann@example.test"], 255, asked.format("ann@example.test")),
        (["vcli", "vadduser", "--password-file", str(empty), "ann@example.test"], 255,
         f"Error: No password entered ({empty}: empty first line)\n"),
        (["vadduser", "-r0", "ann@example.test"], 255, "Error: bad random password length: 0\n"),
        (["vcli", "vadduser", "-r", "--random-length", "0", "ann@example.test"], 64,
         "Error: bad random password length: 0\n"),
        (["vadddomain", "new.test"], 255, asked.format("postmaster")),
        (["vadddomain", "new.test", ""], 255, asked.format("postmaster")),
        (["vcli", "vadddomain", "new.test"], 255, asked.format("postmaster")),
        (["vcli", "vadddomain", "--password-file", str(empty), "new.test"], 255,
         f"Error: No password entered ({empty}: empty first line)\n"),
        (["vpasswd", "bob@example.test", ""], 255, asked.format("bob@example.test")),
        (["vcli", "vpasswd", "--password-file", str(empty), "bob@example.test"], 255,
         f"Error: No password entered ({empty}: empty first line)\n"),
        (["vcli", "vmoduser", "--password-file", str(empty), "bob@example.test"], 255,
         f"Error: No password entered ({empty}: empty first line)\n"),
    ]
    not_a_hash = "Error: not a crypt(3) hash (want $id$salt$hash, or 13 DES characters)\n"
    for bad in ("plaintext", "$6$", "short", "x" * 14):
        cases += [(["vadduser", "-e", bad, "ann@example.test"], 255, not_a_hash),
                  (["vcli", "vadduser", "-e", bad, "ann@example.test"], 64, not_a_hash),
                  (["vmoduser", "-e", bad, "bob@example.test"], 255, not_a_hash),
                  (["vcli", "vmoduser", "-e", bad, "bob@example.test"], 64, not_a_hash)]
    before = st.snapshot()
    for argv, rc, err in cases:
        r = st.run(*argv)
        assert (r.rc, r.out, r.err) == (rc, "", err), argv
        assert st.snapshot() == before, argv
    for text, rc, err in [("ann@example.test,\n", 64, "Error: -:1: need address and password\n"),
                          ("ann@example.test,  \n", 64, "Error: -:1: need address and password\n"),
                          ("ann@example.test,plaintext\n", 64, "Error: -:1: ann@example.test: " + not_a_hash[7:])]:
        args = ["vcli", "vadduser", "--from-file", "-"] + (["--hashed"] if "plaintext" in text else [])
        r = st.run(*args, input=text)
        assert (r.rc, r.out, r.err) == (rc, "", err), text
    r = st.run("vcli", "vadduser", "--from-file", "-", input="address,hash\nann@example.test,plaintext\n")
    assert (r.rc, r.err) == (64, "Error: -:2: ann@example.test: " + not_a_hash[7:])
    assert st.snapshot() == before


def test_i10_05_empty_vmoduser_values_are_ignored_and_real_hashes_kept(st):
    """Item 5: vmoduser -e/-C/-c/-D '' change nothing (vpopmail treats them as not given), on both
    front ends; a real $id$ or DES hash is stored verbatim."""
    line = st.fields(D, "bob")
    for argv in (["vmoduser", "-e", "", "-C", "", "-c", "", "-D", "", "bob@example.test"],
                 ["vcli", "vmoduser", "-e", "", "-C", "", "-c", "", "-D", "", "bob@example.test"]):
        r = st.run(*argv)
        assert r.t == (0, "", ""), argv
        assert st.fields(D, "bob") == line, argv
    st.ok("vadduser", "-e", HASH6, "ann@example.test")
    assert st.fields(D, "ann")[1] == HASH6
    st.ok("vcli", "vmoduser", "-e", DES, "ann@example.test")
    assert st.fields(D, "ann")[1] == DES
    st.ok("vadduser", "-e", "", "cid@example.test", "Cid-pw1")  # -e '' is not given: the argument counts
    assert verify("Cid-pw1", st.fields(D, "cid")[1])


@pytest.mark.parametrize("toml, key", [
    ('vpopmial_dir = "/elsewhere"\n', "vpopmial_dir"),
    ('[store]\nqmail_dri = "/elsewhere"\n', "store.qmail_dri"),
    ('[profiles.mx]\nremote = "mx:8900"\nlogni = "a@b.test"\n', "profiles.mx.logni"),
])
def test_i10_06_unknown_config_key_is_exit_78(st, toml, key):
    """Item 6: a misspelt key is one line naming the file and the key, exit 78, through `vcli config
    show` and a classic command (it used to be ignored and the machine's store used)."""
    conf = st.base / "config.toml"
    conf.write_text(toml)
    for argv in (["vcli", "config", "show"], ["vuserinfo", "bob@example.test"]):
        r = st.run(*argv, env={"VCLI_CONFIG": str(conf)})
        assert r.rc == 78 and r.out == "", argv
        assert r.err.startswith(f"Error: {conf}: unknown key {key} (known: ") and r.err.count("\n") == 1, r


def test_i10_06_missing_named_config_is_exit_78(st):
    """Item 6: VCLI_CONFIG naming a file that does not exist is an error, not 'no config'."""
    missing = str(st.base / "missing.toml")
    for argv in (["vcli", "config", "show"], ["vdominfo", D]):
        r = st.run(*argv, env={"VCLI_CONFIG": missing})
        assert r.t == (78, "", f"Error: {missing}: no such config file (named by VCLI_CONFIG)\n"), argv
    assert tuple(gendocs.PROFILE_HELP) == PROFILE_KEYS  # the keys checked are the keys documented
    good = st.base / "good.toml"
    good.write_text(f'[store]\nqmail_dir = "{st.qm}"\n[profiles.mx]\nremote = "mx:8900"\nlogin = "a@b.test"\n')
    r = st.run("vcli", "config", "show", "-o", "json", env={"VCLI_CONFIG": str(good)})
    assert r.rc == 0 and json.loads(r.out)["profiles"] == {"mx": {"remote": "mx:8900", "login": "a@b.test"}}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_i10_09_completion_show_exits_0(st, shell):
    """Item 9: the script's length used to become the exit status (71, 116, 2)."""
    r = st.run("vcli", "completion", "show", "--shell", shell)
    assert (r.rc, r.err) == (0, "")
    assert r.out == {"bash": gendocs.bash, "zsh": gendocs.zsh, "fish": gendocs.fish}[shell]()


def test_i10_14_csv_fields_trimmed_and_bom_skipped(st, tmp_path):
    """Item 14: `u@d, pw , 5M , Name` stores pw, 5242880S and Name; a UTF-8 BOM is no part of the
    first address; the same for a file with a header."""
    feed = tmp_path / "users.csv"
    feed.write_bytes("\ufeffann@example.test, Ann-pw1 , 5M , Ann Smith \n".encode())
    st.ok("vcli", "vadduser", "--from-file", str(feed))
    f = st.fields(D, "ann")
    assert (f[4], f[6]) == ("Ann Smith", "5242880S") and verify("Ann-pw1", f[1])
    r = st.run("vcli", "vadduser", "--from-file", "-",
               input="\ufeff address , password , quota\n cid@example.test , Cid-pw1 , 1000C\n")
    assert r.t == (0, "", "")
    f = st.fields(D, "cid")
    assert (f[4], f[6]) == ("cid", "1000C") and verify("Cid-pw1", f[1])


@pytest.fixture(params=["local", "remote"])
def backend(request, tmp_path):
    """An env on a store with example.test; remote: through a real daemon process."""
    env = make_env(tmp_path)
    assert env_run(env, "vadddomain", D, "Pm-pass1").returncode == 0
    if request.param == "local":
        yield env
        return
    with Daemon(env) as d:
        yield dict(env, VCLI_REMOTE=f"127.0.0.1:{d.port}", VCLI_LOGIN=f"postmaster@{D}", VCLI_PASSWORD="Pm-pass1")


def test_i10_19_non_utf8_from_file_names_the_line(backend, tmp_path):
    """Item 19: a Latin-1 line was a UnicodeDecodeError (exit 70), locally and remotely: now one line
    naming the line, exit 65, and nothing imported."""
    feed = tmp_path / "users.csv"
    feed.write_bytes(b"ann@example.test,Ann-pw1\n# ok\nj\xf6rg@example.test,J-pw1\n")
    r = env_run(backend, "vcli", "vadduser", "--from-file", str(feed))
    assert (r.returncode, r.stdout, r.stderr) == (65, "", f"Error: {feed}:3: not UTF-8 text (byte 2)\n")
    r = env_run(backend, "vuserinfo", "-n", "ann@example.test")
    assert (r.returncode, r.stdout) == (255, "")
    r = env_run(backend, "vcli", "catchall", D)  # .qmail-default is read from the local tree only
    if "VCLI_REMOTE" in backend:
        assert (r.returncode, r.stdout, r.stderr) == (64, "", "Error: catchall works on the local store only\n")
    else:
        assert (r.returncode, r.stdout) == (0, "delete\n")


def _sh(st: CliStore, script: str) -> subprocess.CompletedProcess:
    bash = shutil.which("bash")
    assert bash, "bash is required"
    return subprocess.run([bash, "-c", script], env=st.env, capture_output=True, text=True, timeout=60)


def test_i10_20_closed_stdout(st):
    """Item 20: with stdout closed, vadduser created the user and then exited 70. Now a command whose
    output does not matter succeeds quietly; a random password that cannot be shown is refused
    (74) before anything is created."""
    r = _sh(st, f"{tool('vadduser')} ann@example.test Ann-pw1 >&-")
    assert (r.returncode, r.stderr) == (0, "")
    assert verify("Ann-pw1", st.fields(D, "ann")[1])
    before = st.snapshot()
    for cmd in (f"{tool('vadduser')} -r cid@example.test", f"{tool('vcli')} vadduser -r cid@example.test",
                f"{tool('vpasswd')} -r bob@example.test", f"{tool('vadddomain')} -r new.test"):
        r = _sh(st, cmd + " >&-")
        assert (r.returncode, r.stderr) == (74, "Error: cannot show the random password on standard output "
                                                "(standard output is closed); nothing changed\n"), cmd
        assert st.snapshot() == before, cmd


def test_i10_20_random_password_to_a_full_disk(st):
    """Item 20: `vadduser -r u@d >/dev/full` created the user and lost the password (exit 74)."""
    assert os.path.exists("/dev/full"), "/dev/full is required"
    before = st.snapshot()
    for argv in (["vadduser", "-r", "cid@example.test"], ["vcli", "vadduser", "-r", "cid@example.test"],
                 ["vpasswd", "-r8", "bob@example.test"], ["vcli", "vpasswd", "-r", "bob@example.test"]):
        with open("/dev/full", "w") as full:
            p = subprocess.run([tool(argv[0]), *argv[1:]], env=st.env, stdout=full, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, timeout=60)
        assert (p.returncode, p.stderr) == (74, "Error: cannot show the random password on standard output "
                                                "(No space left on device); nothing changed\n"), argv
        assert st.snapshot() == before, argv
    st.ok("vmoduser", "-d", "bob@example.test")  # NO_PASSWD_CHNG: refused before a password is shown
    before = st.snapshot()
    assert st.run("vpasswd", "-r", "bob@example.test").t == (255, "", "Error: Illegal username\n")
    assert st.snapshot() == before
    r = st.run("vadduser", "-r", "cid@example.test")  # shown, then made
    assert r.rc == 0 and verify(r.out.removeprefix("Random password: ").rstrip("\n"), st.fields(D, "cid")[1])


def test_i10_from_file_reports_every_bad_line_then_imports_nothing(st):
    """Confusing item: the import stopped at the first bad line; now every bad line is listed (20,
    then a count), nothing is imported, and an address beside --from-file is a usage error."""
    lines = ["ann@example.test,Ann-pw1"] + [f"u{i}@nodomain.test,Pw-{i}" for i in range(25)] + ["b:x@example.test,x"]
    before = st.snapshot()
    r = st.run("vcli", "vadduser", "--from-file", "-", input="\n".join(lines) + "\n")
    assert (r.rc, r.out) == (245, "")  # the first bad line's status (Domain does not exist)
    err = r.err_lines
    assert err[0] == "Error: -:2: u0@nodomain.test: Domain does not exist"
    assert err[19] == "Error: -:21: u19@nodomain.test: Domain does not exist"
    assert err[20:] == ["Error: ... and 6 more bad lines"]
    assert st.snapshot() == before
    r = st.run("vcli", "vadduser", "--from-file", "-", "ann@example.test", input="cid@example.test,Cid-pw1\n")
    assert r.t == (64, "", "Error: --from-file takes no address or password arguments\n")
    assert st.snapshot() == before


def test_i10_valias_s_and_vmoduser_C_on_vcli(st):
    """Confusing item: `vcli valias -s` and `vcli vmoduser -C` exist, as on the classic names."""
    st.ok("valias", "-i", "bob@example.test", "info@example.test")
    assert st.run("vcli", "valias", "-s", D).t == (0, "info@example.test -> bob@example.test\n", "")
    assert st.run("vcli", "valias", "--show", "info@example.test").out == "info@example.test -> bob@example.test\n"
    st.ok("vcli", "vmoduser", "-C", "New-pw1", "bob@example.test")
    assert verify("New-pw1", st.fields(D, "bob")[1])
    st.ok("vcli", "vmoduser", "--clear-password", "New-pw2", "bob@example.test")
    assert verify("New-pw2", st.fields(D, "bob")[1])


def test_i10_control_characters_escaped_and_csv_cells_guarded(st):
    """Confusing item: a comment holding terminal escapes or a formula (a plain user can set it over
    vpopmaild) was printed raw; plain/table show \\xNN, CSV cells get a leading ', JSON is exact."""
    evil = "\x1b]0;owned\x07\x1b[2J=HYPERLINK(1)"
    st.ok("vmoduser", "-c", evil, "bob@example.test")
    shown = "\\x1b]0;owned\\x07\\x1b[2J=HYPERLINK(1)"
    assert st.run("vuserinfo", "-c", "bob@example.test").out == shown + "\n"
    assert f"comment/gecos: {shown}\n" in st.run("vcli", "vuserinfo", "bob@example.test").out
    table = st.run("vcli", "vuserinfo", "-D", D, "-o", "table").out
    assert shown in table and "\x1b" not in table
    st.ok("vmoduser", "-c", "=HYPERLINK(1)", "bob@example.test")
    st.ok("valias", "-i", "@evil", "info@example.test")
    csv_out = st.run("vcli", "vuserinfo", "-D", D, "-o", "csv").out
    assert "'=HYPERLINK(1)" in csv_out and ",=HYPERLINK" not in csv_out
    assert st.run("vcli", "valias", D, "-o", "csv").out == "alias,line\ninfo@example.test,'@evil\n"
    assert json.loads(st.run("vcli", "vuserinfo", "bob@example.test", "-o", "json").out)["gecos"] == "=HYPERLINK(1)"


def test_i10_catchall_subcommand(st):
    """Confusing item (issue item 2): `vcli catchall` shows and sets a domain's catch-all."""
    qd = st.ddir(D) / ".qmail-default"
    prog = f"| {st.vp}/bin/vdelivermail ''"
    assert st.run("vcli", "catchall", D).t == (0, "delete\n", "")
    st.ok("vcli", "catchall", D, "--set", "Bob")
    assert qd.read_text() == f"{prog} {st.ddir(D)}/bob\n"
    assert st.run("vcli", "catchall", D).out == f"{st.ddir(D)}/bob\n"
    assert st.run("vdeluser", "bob@example.test").t == (201, "", "Error: can't delete catchall account\n")
    st.ok("vcli", "catchall", D, "--set", "all@elsewhere.test")
    assert st.run("vcli", "catchall", D).out == "all@elsewhere.test\n"
    st.ok("vcli", "catchall", D, "--bounce")
    assert qd.read_text() == f"{prog} bounce-no-mailbox\n"
    st.ok("vcli", "catchall", D, "--delete")
    assert qd.read_text() == f"{prog} delete\n"
    before = st.snapshot()
    assert st.run("vcli", "catchall", D, "--set", "nobody").t == (246, "", "Error: User does not exist: nobody@example.test\n")
    assert st.run("vcli", "catchall", D, "--bounce", "--delete").t == (64, "", "Error: give one of --set, --bounce, --delete\n")
    assert st.run("vcli", "catchall", "nodomain.test").rc == 245
    assert st.snapshot() == before
    st.ok("vadddomain", "-e", "postmaster", "new.test", "Pm-pass1")
    assert st.run("vcli", "catchall", "new.test").out == f"{st.ddir('new.test')}/postmaster\n"




def test_i10_completion_of_option_values(st):
    """Confusing item: `vuserinfo -D <TAB>` offered no domains, --format values and `vcli vpopmaild`
    options were not completed (the checked-in script, run by bash)."""
    st.ok("vadddomain", "example.org", "Pm-pass1")
    bash = shutil.which("bash")
    assert bash, "bash is required"

    def complete(line: str) -> list[str]:
        r = subprocess.run([bash, "-c", BASH_COMPLETE, "_", os.path.join(REPO, "completions", "vcli.bash"), line],
                           env=st.env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return [x for x in r.stdout.split("\n") if x]

    assert complete("vuserinfo -D ") == ["example.org", "example.test"]
    assert complete("vuserinfo -D example.t") == ["example.test"]
    assert complete("vcli vuserinfo --domain example.o") == ["example.org"]
    assert complete("vcli vuserinfo -o ") == ["plain", "table", "json", "csv"]
    assert complete("vcli vdominfo --format j") == ["json"]
    assert complete("vcli vpopmaild --li") == ["--listen"]
    assert {"--stdio", "--user", "--workers"} <= set(complete("vcli vpopmaild --"))
    fish = open(os.path.join(REPO, "completions", "vcli.fish")).read()
    assert "complete -c vuserinfo -s D -r -a '(vcli-complete domains (commandline -ct))'" in fish
    assert "-l format -s o -r -a 'plain table json csv'" in fish


def test_i10_cosmetic(st):
    """Confusing items, cosmetic: vdeldomain --dry-run -f does not claim it deleted; vadduser.1
    describes -s and shows -r[LEN]; the CSV flag_names is a ;-separated list."""
    st.ok("vaddaliasdomain", D, "alias.test")
    r = st.run("vcli", "vdeldomain", "--dry-run", "-f", D)
    assert r.rc == 0 and "Warning: Alias domains that would be deleted:\n   alias.test\n" in r.out
    assert "deleted:" not in r.out.replace("would be deleted:", "")
    page = open(os.path.join(REPO, "man", "vadduser.1")).read()
    assert "\\fB\\-s\\fR\naccepted for compatibility and ignored" in page
    assert "\\fB\\-r\\fR[\\fILEN\\fR]" in page and "\\-r\\fR \\fIARG" not in page
    st.ok("vmoduser", "-p", "-s", "bob@example.test")
    out = st.run("vcli", "vuserinfo", "bob@example.test", "-o", "csv").out.splitlines()
    assert out[0] == "address,gecos,quota,flags,flag_names,dir" and ",no_pop;no_smtp," in out[1]
