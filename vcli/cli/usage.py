"""Usage texts of the classic commands (vmoduser's flag part comes from the flag table)."""

from __future__ import annotations

from .. import flags as F

VADDUSER = """\
vadduser: usage: [options] email_address [passwd]
options: -v (print the version)
         -q quota_in_bytes (quota of the new user, NOQUOTA for none)
         -c comment (the gecos comment field)
         -e encrypted_password (store this crypt(3) hash as it is, e.g. '$6$...')
         -r[len] (generate a random password of len characters, default 12)
         -s (accepted for compatibility and ignored, with a warning, as in vpopmail 5.6)
Without a password argument it is asked for (twice on a terminal; otherwise two
lines are read from standard input), so it never has to appear in argv.
"""

VDELUSER = """\
vdeluser: usage: [options] email_address
options: -v (print version number)
"""


def _vmoduser() -> str:
    lines = [
        "vmoduser: usage: [options] email_addr or domain (for each user in domain)",
        "options: -v ( display the vpopmail version number )",
        "         -n ( don't rebuild the vpasswd.cdb file )",
        "         -q quota ( set quota )",
        "         -c comment (set the comment/gecos field )",
        "         -e encrypted_passwd (set the password field )",
        "         -C clear_text_passwd (set the password field )",
        "         -D dir (set the home directory field )",
        "         -h (print this help )",
        "the following options are bit flags in the gid int field",
        "         -x ( clear all flags )",
    ]
    others = []
    for f in F.USAGE_ORDER:
        line = f"         -{f.letter} ( {f.help} )"
        (others if f.name in F.OTHER_PROGRAM_FLAGS else lines).append(line)
    lines.append("  [these flags are not used by vpopmail itself but kept for other programs]")
    return "\n".join(lines + others) + "\n"


VMODUSER = _vmoduser()

VUSERINFO = """\
vuserinfo: usage: [options] email_address
options: -v (print version number)
         -a (display all fields, this is the default)
         -n (display name field)
         -p (display crypted password)
         -u (display uid field)
         -g (display gid field)
         -c (display comment field)
         -d (display directory)
         -q (display quota field)
         -Q (display quota usage)
         -C (display clear text password)
         -l (display last authentication time)
         -D domainname (show all users on this domain)
"""

VPASSWD = """\
vpasswd: usage: [options] email_address [password]
options: -v (print version number)
         -r[len] (generate a random password of len characters, default 12)
"""

VSETUSERQUOTA = """\
vsetuserquota: [options] email_address|domain_name quota
options:
-v (print version number)

Given a domain name instead of an address, the quota is set for every user of the domain.
"""

VADDDOMAIN = """\
vadddomain: usage: vadddomain [options] virtual_domain [postmaster password]
options: -v prints the version
         -q quota_in_bytes (quota of the postmaster account)
         -b (mail to unknown users is deleted; the default)
         -e email_address (mail to unknown users goes to this address; without '@',
            to that mailbox of the new domain, e.g. '-e postmaster')
         -u user (uid, gid and base directory of this /etc/passwd user)
         -d dir (base directory of the domain)
         -i uid (uid of the domain)
         -g gid (gid of the domain)
         -O (bulk adds: do not signal qmail-send)
         -r[len] (random postmaster password of len characters, default 12)
"""

VDELDOMAIN = """\
vdeldomain: usage: [options] domain_name
options: -v (print version number)
options: -f (force delete of virtual domains)
"""

VDOMINFO = """\
vdominfo: usage: [options] [domain]
options: -v (print version number)
         -a (display all fields, this is the default)
         -n (display domain name)
         -u (display uid field)
         -g (display gid field)
         -d (display domain directory)
         -t (display total users)
         -r (display real domain)
"""

VALIAS = """\
valias: usage: [options] email_address
options: -v ( display the vpopmail version number )
         -n ( show alias names, use just domain )
         -s ( show aliases, can use just domain )
         -d ( delete alias )
         -i alias_line (insert alias line)

Example: valias -i fred@example.com bob@example.com
         (mail to bob@example.com is also sent to fred@example.com)
"""

VADDALIASDOMAIN = """\
vaddaliasdomain: usage: [options] real_domain alias_domain
options: -v (print version number)
The two domains may be given in either order: the one that exists is the real one.
"""

VMODDOMLIMITS = """\
vmoddomlimits: usage: [options] domain\x20
options: -v ( display the vpopmail version number )
         -d ( use the vlimits.default file, instead of domain )
         -S ( show current settings )
         -D ( delete limits for this domain, i.e. switch to default limits)
         -Q quota-in-megabytes ( set domain disk quota, '100' = 100 MB )
         -q quota-in-bytes ( set default user quota, '10M' = 10 MB )
         -M count ( set domain max msg count )
         -m count ( set default user max msg count )
         -P count ( set max amount of pop accounts )
         -A count ( set max amount of aliases )
         -F count ( set max amount of forwards )
         -R count ( set max amount of autoresponders )
         -L count ( set max amount of mailing lists )
the following options are bit flags in the gid int field
         -g "flags"  (set flags, see below)
         gid flags:
            u ( set no dialup flag )
            d ( set no password changing flag )
            p ( set no pop access flag )
            s ( set no smtp access flag )
            w ( set no web mail access flag )
            i ( set no imap access flag )
            r ( set no external relay flag )
            c ( set no spamassasssin flag )
            x ( set delete spam flag )
            m ( set no maildrop flag )
the following options are bit flags for non postmaster admins
         -p "flags"  (set pop account flags)
         -a "flags"  (set alias flags)
         -f "flags"  (set forward flags)
         -r "flags"  (set autoresponder flags)
         -l "flags"  (set mailinglist flags)
         -u "flags"  (set mailinglist users flags)
         -o "flags"  (set mailinglist moderators flags)
         -x "flags"  (set quota flags)
         -z "flags"  (set default quota flags)
         perm flags:
            a ( set deny all flag )
            c ( set deny create flag )
            m ( set deny modify flag )
            d ( set deny delete flag )
"""

VDELOLDUSERS = """\
vdeloldusers: usage: [options]
options: -a days (users whose last login is older than this many days; default 180)
         -v (print the version number and exit)
         -d domain (look at this domain only)
         -e (look at every domain)
         -D (delete the users found; without it nothing is deleted)
         -V (verbose: list the users found and the ones skipped)
A user's last login is the time of its lastauth file (written at creation, then by
each login); users without one are never deleted, nor postmaster or the catch-all.
"""

VPOPBULL = """\
usage: vpopbull [options] -f [email_file] [virtual_domain] [...]
       -v (print version number)
       -V (verbose: list the addresses delivered to)
       -f email_file (file with the message)
       -e exclude_email_addr_file (addresses to leave out, one a line)
       -n (deliver nothing, list the addresses instead)
       -c (copy the file into each Maildir, with To: and Date: headers; the default)
       -h (use hard links to the file)
       -s (use symbolic links to the file)
Without a domain every real domain gets the bulletin.  Users over their quota are
skipped (listed on stderr).
"""
