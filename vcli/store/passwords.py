"""Password hashing, verification, random passwords and the strength policy.

Hashing goes through the system's crypt(3) (libxcrypt) via the `crypt_r`
package: the same function vchkpw and vpopmaild call, so every scheme a site's
vpopmail accepts ($1$, $5$, $6$, $2b$, $y$, DES) verifies identically here.
"""

from __future__ import annotations

import os

from ..errors import VpopError, WeakPassword

SALT_CHARS = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@!#%*"
SCHEMES = {"sha512": "$6$", "md5": "$1$", "des": ""}
MAX_CLEAR = 128
MAX_HASH = 128


def crypt_function():
    """crypt(word, salt) of the crypt_r package, imported when first needed (read-only commands
    never pay for it) and from its C core: the package's Python wrapper tries every method at
    import, five crypt(3) calls (~4 ms of a vadduser)."""
    try:
        from _crypt_r import crypt
    except ImportError:  # a crypt_r laid out otherwise
        from crypt_r import crypt
    return crypt


def _crypt(word: str, salt: str) -> str | None:
    return crypt_function()(word, salt)


def hash_password(clear: str, scheme: str = "sha512") -> str:
    """crypt(3) hash with a fresh 8-char salt ($6$ / $1$) or a 2-char DES salt."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown hash scheme {scheme!r}")
    # os.urandom, not secrets (whose import costs ~3 ms of a vadduser): 64 salt characters, so
    # the low six bits of each random byte pick one uniformly
    if scheme == "des":
        salt = "".join(SALT_CHARS[b & 63] for b in os.urandom(2))
    else:
        salt = SCHEMES[scheme] + "".join(SALT_CHARS[b & 63] for b in os.urandom(8))
    result = _crypt(clear, salt)
    if not result or (scheme != "des" and result[2:3] != "$"):
        raise VpopError(code=-18)
    return result


def verify_password(clear: str, stored: str) -> bool:
    """crypt(clear, stored) == stored, skipping a leading {SCHEME}; empty never matches."""
    if stored.startswith("{") and "}" in stored:
        stored = stored[stored.index("}") + 1 :]
    if not stored:
        return False
    import hmac

    result = _crypt(clear, stored)
    return bool(result) and hmac.compare_digest(result.encode(), stored.encode())


def random_password(length: int = 12) -> str:
    import secrets

    return "".join(secrets.choice(RANDOM_CHARS) for _ in range(length))


def check_clear(clear: str) -> None:
    """Characters the vpasswd text format cannot carry, and the length limit."""
    if any(c in clear for c in "\0\n\r"):
        raise VpopError(code=-20)
    if len(clear) > MAX_CLEAR:
        raise VpopError(code=-27)
    try:  # bytes that are not UTF-8 (argv decodes them to surrogates): crypt(3) cannot take them
        clear.encode("utf-8")
    except UnicodeEncodeError:
        raise VpopError("bad character: the password is not UTF-8 text", code=-20) from None


def check_hash(hashed: str) -> None:
    if any(c in hashed for c in ":\0\n\r"):
        raise VpopError(code=-20)
    if len(hashed) > MAX_HASH:
        raise VpopError(code=-27)


# --- strength policy (~vpopmail/etc/password_strength.conf) -------------------

_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
# check name -> (error code, what the message calls it), in the order vpopmail checks
_CHECKS = {
    "length": (-70, "characters"),
    "alphabet": (-71, "alphabetical characters"),
    "numeric": (-72, "numbers"),
    "other": (-73, "punctuation, symbols, or other characters"),
    "upperlower": (-74, "uppercase and lowercase character diversity"),
}


class Policy:
    """password_strength.conf's rules.  A plain class: vadduser's path imports no dataclasses
    (with inspect, ~8 ms of a one-user add; issue 13's vadduser <= 50 ms)."""

    __slots__ = ("rules", "text")

    def __init__(self, rules: list[tuple[str, str, float]], text: str | None = None):
        self.rules = rules
        self.text = text

    def __eq__(self, other) -> bool:
        return isinstance(other, Policy) and (self.rules, self.text) == (other.rules, other.text)

    def __repr__(self) -> str:
        return f"Policy(rules={self.rules!r}, text={self.text!r})"

    @classmethod
    def load(cls, vpopmail_dir: str) -> Policy:
        rules: list[tuple[str, str, float]] = []
        text = None
        try:
            with open(os.path.join(vpopmail_dir, "etc", "password_strength.conf"), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            return cls(rules)
        for line in lines:
            line = line.split("#", 1)[0].strip()
            # `Policy = text`, the keyword in any case (by hand: `re` is ~5 ms of a vadduser)
            rest = line[6:].lstrip() if line[:6].lower() == "policy" else ""
            if rest.startswith("="):
                text = rest[1:].strip()
                continue
            parts = line.split()
            if len(parts) == 3 and parts[0].lower() in _CHECKS and parts[1] in _OPS:
                try:
                    rules.append((parts[0].lower(), parts[1], float(parts[2])))
                except ValueError:
                    pass
        return cls(rules, text)

    def check(self, clear: str) -> None:
        """Raise WeakPassword with vpopmail's wording (note the trailing space)."""
        upper = sum(1 for c in clear if "A" <= c <= "Z")
        lower = sum(1 for c in clear if 90 <= ord(c) <= 122)  # sic: vpopmail's range
        digits = sum(1 for c in clear if c.isdigit())
        alpha = upper + lower
        n = len(clear)
        measures = {
            "length": n,
            "alphabet": alpha / n if n else 0.0,
            "numeric": digits / n if n else 0.0,
            "other": (n - alpha - digits) / n if n else 0.0,
            "upperlower": abs(upper - lower) / alpha if alpha else 0.0,
        }
        for name in _CHECKS:
            for rname, op, value in self.rules:
                if rname != name:
                    continue
                measured = measures[name]
                if name != "length" and value > 1:
                    value /= 100.0
                if _OPS[op](measured, value):
                    continue
                code, what = _CHECKS[name]
                if op == "=":
                    cond = "must always be"
                    if name == "length":
                        what = f"{int(value)} characters long"
                elif op in ("<", "<="):
                    cond = "should have less" if name != "upperlower" else "requires more"
                else:
                    cond = "requires more" if name != "upperlower" else "can only be"
                raise WeakPassword(f"password {cond} {what} ", code, self.text)
