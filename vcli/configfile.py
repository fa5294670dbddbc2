"""Changing settings in the TOML config file vcli reads (`vcli convert` switches `auth_module`).

The file is edited as text, not re-serialised: comments, order and the [profiles] tables stay
as the administrator wrote them; only the lines of the keys set are replaced (or added to the
table settings are read from: `[store]` when the file has one, else the top level).  The result
is parsed again and must hold the new values and every other key unchanged before it replaces
the old file (temp file + fsync + rename + directory fsync): a reader sees the old file or the
new one, never a torn one, and a crash leaves the old one in force.
"""

from __future__ import annotations

import os

from .config import check_keys
from .errors import ConfigError


def toml_string(value: str) -> str:
    """A TOML basic string."""
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _header(line: str) -> str | None:
    """The table name of a `[table]` / `[[table]]` line, else None."""
    s = line.strip()
    if not s.startswith("["):
        return None
    s = s.split("#", 1)[0].strip().strip("[]").strip()
    return s.strip('"')


def _key(line: str) -> str | None:
    s = line.strip()
    if not s or s.startswith(("#", "[")) or "=" not in s:
        return None
    return s.split("=", 1)[0].strip().strip('"')


def edit_text(text: str, values: dict[str, str]) -> str:
    """`text` with each key of `values` set (see the module docstring)."""
    import tomllib

    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file does not parse: {exc}") from None
    table = "store" if isinstance(before.get("store"), dict) else ""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    todo = dict(values)
    current = ""
    last_in_table = -1  # index of the last line of `table` (top level: before the first header)
    first_header = None
    for i, line in enumerate(lines):
        name = _header(line)
        if name is not None:
            current = name
            if first_header is None:
                first_header = i
            continue
        if current != table:
            continue
        if line.strip():
            last_in_table = i
        key = _key(line)
        if key in todo:
            lines[i] = f"{key} = {toml_string(todo.pop(key))}\n"
    if todo:
        new = [f"{k} = {toml_string(v)}\n" for k, v in todo.items()]
        if table == "":
            at = first_header if first_header is not None else len(lines)
            if first_header is not None:
                new.append("\n")
        else:
            at = last_in_table + 1 if last_in_table >= 0 else next(
                i + 1 for i, x in enumerate(lines) if _header(x) == "store")
        lines[at:at] = new
    out = "".join(lines)
    after = tomllib.loads(out)
    want = dict(before)
    section = dict(want.get(table, {})) if table else want
    section.update(values)
    if table:
        want[table] = section
    if after != want:
        raise ConfigError("could not edit the config file safely (unusual layout); set "
                          + ", ".join(f"{k} = {toml_string(v)}" for k, v in values.items()) + " by hand")
    return out


def set_values(path: str, values: dict[str, str]) -> None:
    """Set `values` in the config file at `path` (created, with its directory, when missing)."""
    import stat

    try:
        if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
            raise ConfigError(f"{path}: not a regular file; vcli will not replace it (set VCLI_CONFIG "
                              "to a config file, or unset it)")
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        st, data = None, b""
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8") from None
    out = edit_text(text, values).encode("utf-8")
    import tomllib

    check_keys(path, tomllib.loads(out.decode("utf-8")))
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.vcli-new.{os.getpid()}")
    try:
        os.makedirs(directory, 0o755, exist_ok=True)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        mode = (st.st_mode & 0o7777) if st else 0o644
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            if st and os.geteuid() == 0:
                os.fchown(fd, st.st_uid, st.st_gid)
            view = memoryview(out)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"{path}: {exc.strerror}") from None
