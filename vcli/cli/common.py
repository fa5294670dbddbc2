"""What every command front end shares: opening the store, reading passwords,
and turning errors into one stderr line and an exit status.

Kept free of typer and rich so the classic entry points start fast.
"""

from __future__ import annotations

import os
import sys
from _collections_abc import Callable  # collections.abc without the collections package (start-up)

from ..errors import EXIT_SOFTWARE, StoreIOError, VcliError

VERSION = "5.6.13"  # the vpopmail version the classic tools report with -v

STDOUT_CLOSED = False  # fd 1 was closed at start-up (`cmd >&-`): output is dropped, see guard_std_fds


def guard_std_fds() -> None:
    """Put /dev/null on a closed fd 0, 1 or 2 before anything is opened.

    Otherwise the first file the store opens gets that number, and a print (or a child
    process) writes into it.  Output a command only reports is then dropped quietly; output
    that must be seen (a random password) is refused by emit_now before anything changes.
    """
    global STDOUT_CLOSED
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 - lives as long as the process
        if fd == 1:
            STDOUT_CLOSED = True


def emit_now(lines: list[str]) -> None:
    """Write and flush lines that must be seen *before* the change they report is made
    (a random password): when standard output cannot take them, nothing is changed."""
    if not lines:
        return
    try:
        if STDOUT_CLOSED:
            raise OSError(9, "standard output is closed")
        sys.stdout.write("".join(x + "\n" for x in lines))
        sys.stdout.flush()
    except OSError as exc:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - drop what could not be written, or exit flushes it again
        raise StoreIOError(f"cannot show the random password on standard output "
                           f"({exc.strerror or exc}); nothing changed") from None


_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x20), *range(0x7f, 0xa0))}  # str.translate table, not re


def printable(text: str) -> str:
    """Control characters (terminal escapes, CR, tab...) as \\xNN, so a stored comment cannot
    drive the terminal or forge lines in plain and table output (JSON escapes them itself)."""
    return text if text.isprintable() else text.translate(_CONTROL)  # the common case untouched, fast


def print_lines(lines) -> None:
    """The output lines of a command, control characters escaped; nothing at all for none.
    `lines` may be a generator (a domain listing): written in chunks as it comes, never held."""
    chunk: list[str] = []
    for x in lines:
        chunk.append(printable(x) + "\n")
        if len(chunk) >= 512:
            sys.stdout.write("".join(chunk))
            chunk.clear()
    if chunk:
        sys.stdout.write("".join(chunk))


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def open_store(vpopmail_dir: str | None = None, qmail_dir: str | None = None, wait: float | None = None,
               quiet: bool = False, **remote):
    """The backend every command works on: local store or vpopmaild (see vcli.backend)."""
    from ..backend import open_backend

    return open_backend(vpopmail_dir=vpopmail_dir, qmail_dir=qmail_dir, wait=wait,
                        warn=(lambda m: None) if quiet else warn, **remote)


def read_password(address: str, confirm: bool = True) -> str:
    """Prompt like vpopmail: twice on a tty; without one, prompts on stderr and lines from stdin."""
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        while True:
            first = getpass.getpass(f"Please enter password for {address}: ")
            if not confirm:
                return first
            second = getpass.getpass("enter password again: ")
            if first == second:
                return first
            print("Passwords do not match, try again", file=sys.stderr)
    sys.stderr.write(f"Please enter password for {address}: ")
    if confirm:
        sys.stderr.write("enter password again: ")
    sys.stderr.flush()
    first = (sys.stdin.readline() if sys.stdin else "").rstrip("\r\n")
    if confirm:
        second = (sys.stdin.readline() if sys.stdin else "").rstrip("\r\n")
        if second and second != first:
            raise VcliError("Passwords do not match")
    return first


def leave_now(code: int) -> None:
    """End the process with `code` once stdout and stderr are out, skipping the interpreter's
    teardown (freeing every module, the C libraries' exit handlers: ~3 ms of a 20 ms lookup).
    Only for a command that has finished everything else: nothing was left for atexit, and its
    connections were closed by the command itself (a server sees a proper goodbye)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away: as run() answers it
        code = 141
    except OSError as exc:
        print(f"Error: {exc.strerror or exc}", file=sys.stderr)
        code = 74
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def run(main: Callable[[], int | None], prefix: str = "Error: ") -> int:
    """Run a command body; a VcliError becomes one line on stderr and its exit status."""
    try:
        return main() or 0
    except VcliError as exc:
        print(f"{getattr(exc, 'prefix', prefix)}{exc.message}", file=sys.stderr, flush=True)
        policy = getattr(exc, "policy", None)
        if policy:
            print(f"A password policy is in place:\n\t{policy}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 141
    except OSError as exc:
        print(f"{prefix}{exc.strerror or exc}{': ' + exc.filename if exc.filename else ''}", file=sys.stderr)
        return 74
    except Exception as exc:  # noqa: BLE001 - never a traceback (or a password) in cron mail
        print(f"{prefix}internal error: {type(exc).__name__}", file=sys.stderr)
        if os.environ.get("VCLI_DEBUG"):
            raise
        return EXIT_SOFTWARE
