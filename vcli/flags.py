"""The one table of vpopmail's gid flags (the 4th vpasswd field).

Every other place that names a flag -- CLI options, vmoduser's classic getopt
letters, vuserinfo output, the vpopmaild field names, completions and man pages --
reads this table, so a flag's bit, letter or name is written exactly once.
"""

from __future__ import annotations

from .record import record

# Who may change a flag through vpopmaild's mod_user (spec/flags.md §2).
ANY = "any"  # any session allowed to touch the account
OVERRIDE = "override"  # system admin, or a domain admin holding override_domain_limits
ADMIN = "admin"  # domain admin or system admin
SYSADMIN = "sysadmin"  # system admin only


@record(frozen=True)
class Flag:
    name: str  # vpopmail macro name
    bit: int
    letter: str  # vmoduser option letter
    field: str  # vpopmaild field name (mod_user, user_info, login)
    label: str  # vuserinfo wording
    who: str  # who may set it over the protocol
    help: str  # vmoduser usage text (inside the parentheses)
    info_order: int  # position in vuserinfo's "limits:" list
    proto_order: int | None  # position in vpopmaild's expanded output (None: never shown)
    usage_order: int  # position in vmoduser's usage text
    root_only: bool = False  # vmoduser applies it only when the real uid is 0
    limits_key: str | None = None  # .qmailadmin-limits keyword that ORs this bit in
    domlimit_letter: str | None = None  # vmoddomlimits -g letter

    @property
    def option(self) -> str:
        """Long option of the vcli subcommands, e.g. --no-pop."""
        return "--" + self.field.replace("_", "-")


FLAGS: tuple[Flag, ...] = (
    Flag("NO_PASSWD_CHNG", 0x00001, "d", "no_password_change", "password can not be changed by user",
         OVERRIDE, "don't allow user to change password", 0, 0, 1,
         limits_key="disable_password_changing", domlimit_letter="d"),
    Flag("NO_POP", 0x00002, "p", "no_pop", "pop access closed",
         OVERRIDE, "disable POP access", 1, 1, 2, limits_key="disable_pop", domlimit_letter="p"),
    Flag("NO_WEBMAIL", 0x00004, "w", "no_webmail", "webmail access closed",
         OVERRIDE, "disable webmail [IMAP from localhost*] access", 2, 2, 4,
         limits_key="disable_webmail", domlimit_letter="w"),
    Flag("NO_IMAP", 0x00008, "i", "no_imap", "imap access closed",
         OVERRIDE, "disable non-webmail IMAP access", 3, 3, 5, limits_key="disable_imap", domlimit_letter="i"),
    Flag("BOUNCE_MAIL", 0x00010, "b", "bounce_mail", "mail will be bounced back to sender",
         OVERRIDE, "bounce all mail", 10, 4, 6),
    Flag("NO_RELAY", 0x00020, "r", "no_relay", "user not allowed to relay mail",
         OVERRIDE, "disable roaming user/pop-before-smtp", 5, 5, 8,
         limits_key="disable_external_relay", domlimit_letter="r"),
    Flag("NO_DIALUP", 0x00040, "u", "no_dialup", "no dialup flag has been set",
         OVERRIDE, "set no dialup flag", 9, 6, 15, limits_key="disable_dialup", domlimit_letter="u"),
    Flag("V_USER0", 0x00080, "0", "user_flag_0", "user flag 0 is set", OVERRIDE, "set V_USER0 flag", 14, 7, 16),
    Flag("V_USER1", 0x00100, "1", "user_flag_1", "user flag 1 is set", OVERRIDE, "set V_USER1 flag", 15, 8, 17),
    Flag("V_USER2", 0x00200, "2", "user_flag_2", "user flag 2 is set", ANY, "set V_USER2 flag", 16, 9, 18),
    Flag("V_USER3", 0x00400, "3", "user_flag_3", "user flag 3 is set", ANY, "set V_USER3 flag", 17, 10, 19),
    Flag("NO_SMTP", 0x00800, "s", "no_smtp", "smtp access is closed",
         OVERRIDE, "disable SMTP AUTH access", 4, 11, 3, limits_key="disable_smtp", domlimit_letter="s"),
    Flag("QA_ADMIN", 0x01000, "a", "domain_admin_privileges", "has qmailadmin administrator access",
         ADMIN, "grant qmailadmin administrator privileges", 11, 12, 9),
    Flag("V_OVERRIDE", 0x02000, "o", "override_domain_limits", "user is not subject to domain limits",
         SYSADMIN, "user is not subject to domain limits", 18, 13, 7),
    Flag("NO_SPAMASSASSIN", 0x04000, "f", "no_spamassassin", "spamassassin processing disabled",
         ANY, "disable spamassassin", 6, 14, 12, limits_key="disable_spamassassin", domlimit_letter="c"),
    Flag("DELETE_SPAM", 0x08000, "F", "delete_spam", "delete spam",
         ANY, "delete spam", 7, 15, 13, limits_key="delete_spam", domlimit_letter="x"),
    Flag("SA_ADMIN", 0x10000, "S", "system_admin_privileges", "has system administrator access",
         SYSADMIN, "grant system administrator privileges - access all domains", 12, 17, 10, root_only=True),
    Flag("SA_EXPERT", 0x20000, "E", "system_expert_privileges", "has expert access",
         SYSADMIN, "grant expert privileges - edit .qmail files", 13, None, 11, root_only=True),
    Flag("NO_MAILDROP", 0x40000, "m", "no_maildrop", "maildrop processing disabled",
         ANY, "disable maildrop", 8, 16, 14, limits_key="disable_maildrop", domlimit_letter="m"),
)

BY_NAME = {f.name: f for f in FLAGS}
BY_LETTER = {f.letter: f for f in FLAGS}
BY_FIELD = {f.field: f for f in FLAGS}

QA_ADMIN = BY_NAME["QA_ADMIN"].bit
SA_ADMIN = BY_NAME["SA_ADMIN"].bit
V_OVERRIDE = BY_NAME["V_OVERRIDE"].bit
NO_PASSWD_CHNG = BY_NAME["NO_PASSWD_CHNG"].bit

# Flags vpopmail documents as used by vpopmail itself versus left for other programs:
# vmoduser's usage lists the latter after a note.
OTHER_PROGRAM_FLAGS = frozenset({"NO_DIALUP", "V_USER0", "V_USER1", "V_USER2", "V_USER3"})

INFO_ORDER = tuple(sorted(FLAGS, key=lambda f: f.info_order))
PROTO_ORDER = tuple(sorted((f for f in FLAGS if f.proto_order is not None), key=lambda f: f.proto_order))
USAGE_ORDER = tuple(sorted(FLAGS, key=lambda f: f.usage_order))
LIMIT_FLAGS = tuple(f for f in FLAGS if f.limits_key)


def names_of(bits: int) -> list[str]:
    """Protocol field names of the bits set in `bits`, in table order."""
    return [f.field for f in FLAGS if bits & f.bit]


def from_letters(letters: str) -> int:
    """OR of the flags named by vmoduser letters, e.g. 'ps' -> NO_POP|NO_SMTP."""
    bits = 0
    for ch in letters:
        bits |= BY_LETTER[ch].bit
    return bits
