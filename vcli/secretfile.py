"""Reading a secret from a file or stdin: shared by the CLI and the core (the remote backend's
--password-file), so the core need not import from vcli/cli/."""

from __future__ import annotations

import sys


def read_secret_file(path: str) -> str:
    """First line of a file (or '-' for stdin), for --password-file."""
    if path == "-":
        return sys.stdin.readline().rstrip("\r\n")
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\r\n")
