"""`vcli vadduser --from-file`: the store it leaves is byte-identical (hashes aside) to adding the same
users one by one with `vadduser`, across the 100-user hash-directory boundary (spec/store.md §6)."""

from __future__ import annotations

import shutil

import pytest
from cli_helpers import CliStore, fast_base, masked_vpasswd, snapshot, verify, vpasswd_cdb

D = "example.test"
N = 250  # postmaster + 250: entries 100-199 land in 0/, 200-251 in 1/


def rows():
    """(address, password, quota, comment) with a few quotas and comments set."""
    out = []
    for i in range(N):
        quota = "5M" if i % 7 == 3 else ("1000C" if i % 11 == 5 else "")
        comment = f"User {i}" if i % 5 == 1 else ""
        out.append((f"user{i:03d}@example.test", f"Pw-{i}-secret", quota, comment))
    return out


def fake_hash(i: int) -> str:
    return "$6$" + f"s{i:07d}" + "$" + ("h" * 80 + f"{i:06d}")


def view(base) -> dict:
    """Every file and directory: (mode, bytes), vpasswd with the hash field masked; each vpasswd.cdb
    first checked to be the cdb of its own vpasswd, then compared through it."""
    snap = snapshot(base)
    out = {}
    for rel, (mode, data) in snap.items():
        if rel.endswith("/vpasswd.cdb"):
            assert data == vpasswd_cdb(snap[rel[: -len(".cdb")]][1]), rel
            out[rel] = (mode, b"checked")
        elif rel.endswith("/vpasswd"):
            out[rel] = (mode, masked_vpasswd(data))
        else:
            out[rel] = (mode, data)
    return out


def fresh(tmp_path) -> CliStore:
    base = tmp_path / "store"
    if base.exists():
        shutil.rmtree(base)
    st = CliStore(base)
    st.call_ok("vadddomain", D, "Pm-pass1")
    return st


def one_by_one(tmp_path) -> dict:
    st = fresh(tmp_path)
    for addr, pw, quota, comment in rows():
        args = (["-q", quota] if quota else []) + (["-c", comment] if comment else [])
        st.call_ok("vadduser", *args, addr, pw)
    d = st.ddir(D)
    # the boundary was crossed as vpopmail does it (spec/store.md §6.2)
    assert st.fields(D, "user097")[5] == f"{d}/user097"
    assert st.fields(D, "user098")[5] == f"{d}/0/user098"
    assert st.fields(D, "user198")[5] == f"{d}/1/user198"
    assert (d / ".dir-control").read_bytes().split(b"\n")[0] == b"251"
    assert (d / ".dir-control").read_bytes().split(b"\n")[7] == b"1"
    return view(st.base)


def plain_lines(hashed: bool = False) -> str:
    out = []
    for i, (addr, pw, quota, comment) in enumerate(rows()):
        fields = [addr, fake_hash(i) if hashed else pw]
        if quota or comment:
            fields.append(quota)
        if comment:
            fields.append(comment)
        out.append(",".join(fields))
    return "# users to add\n" + "\n".join(out) + "\n"


def csv_with_header(secret_column: str = "password") -> str:
    out = [f"comment,address,quota,{secret_column}"]
    for i, (addr, pw, quota, comment) in enumerate(rows()):
        out.append(f"{comment},{addr},{quota},{fake_hash(i) if secret_column == 'hash' else pw}")
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A directory for the stores of this module, and the view of the one-by-one store."""
    with fast_base(tmp_path_factory.mktemp("bulk")) as tmp:
        yield tmp, one_by_one(tmp)


@pytest.mark.parametrize("variant", ["plain-file", "csv-header-stdin", "hashed", "csv-hash-column"])
def test_bulk_import_equals_one_by_one(reference, variant):
    tmp, ref = reference
    src = tmp / "users.txt"
    args, stdin, hashed = ["--from-file", str(src)], None, False
    if variant == "plain-file":
        src.write_text(plain_lines())
    elif variant == "csv-header-stdin":
        args, stdin = ["--from-file", "-"], csv_with_header()
    elif variant == "hashed":
        args, stdin, hashed = ["--from-file", "-", "--hashed"], plain_lines(hashed=True), True
    else:
        src.write_text(csv_with_header("hash"))
        hashed = True
    st = fresh(tmp)
    r = st.run("vcli", "vadduser", *args, input=stdin)
    assert r.t == (0, "", "")
    assert view(st.base) == ref
    if hashed:  # the hashes as given, verbatim
        for i, (addr, _, _, _) in enumerate(rows()):
            assert st.fields(D, addr.split("@")[0])[1] == fake_hash(i)
    else:  # every user got her own password
        for addr, pw, _, _ in rows()[:: 1 if variant == "plain-file" else 25]:
            assert verify(pw, st.fields(D, addr.split("@")[0])[1]), addr


def test_bulk_import_validates_every_row_first(base):
    st = CliStore(base)
    st.call_ok("vadddomain", D, "Pm-pass1")
    st.call_ok("vadduser", "bob@example.test", "Bob-pw1")
    before = st.snapshot()
    cases = [
        ("ann@example.test,pw-1\nb:d@example.test,pw-2\n", 255, "Illegal username", 2),
        ("ann@example.test,pw-1\nann@example.test,pw-2\n", 254, "User already exists (line 1)", 2),
        ("ann@example.test,pw-1\nBOB@example.test,pw-2\n", 254, "BOB@example.test: User already exists", 2),
        ("ann@example.test,pw-1\n" + "u" * 65 + "@example.test,pw-2\n", 231, "user name too long (max=64)", 2),
        ("ann@example.test,pw-1\ncid@example.test,pw-2," + "1" * 21 + "\n", 227, "quota too long (max=20)", 2),
        ("ann@example.test,pw-1\ncid@nodomain.test,pw-2\n", 245, "Domain does not exist", 2),
        ("ann@example.test,pw-1\ncid@example.test,\n", 64, "need address and password", 2),  # empty = none
        ("ann@example.test,pw-1\ncid@example.test,pw-2,5M,a:b\n", 236, "bad character", 2),
        ("ann@example.test\n", 64, "need address and password", 1),
    ]
    for text, rc, words, line in cases:
        r = st.run("vcli", "vadduser", "--from-file", "-", input=text)
        assert r.rc == rc and r.out == "", (text, r)
        assert r.err.startswith("Error: ") and words in r.err_lines[0], (text, r)
        assert len(r.err_lines) == 1, r
        if line is not None:
            assert r.err.startswith(f"Error: -:{line}: "), (text, r)
        assert st.snapshot() == before, text
    r = st.run("vcli", "vadduser", "--from-file", "-", "--exist-ok", input="bob@example.test,x-1\nann@example.test,a-1\n")
    assert r.t == (0, "", "")
    assert verify("Bob-pw1", st.fields(D, "bob")[1]) and verify("a-1", st.fields(D, "ann")[1])


def test_bulk_add_builds_vpasswd_and_cdb_beside_the_trees_with_the_same_bytes(base, monkeypatch):
    """From OVERLAP new users the cdb module builds vpasswd and its cdb in a thread while the
    worker processes make the trees: the same files as building them afterwards, and a failure
    of either side leaves nothing."""
    from cli_helpers import CliStore, patched_environ

    from vcli.backend import open_backend
    from vcli.model import NewUser
    from vcli.store.auth import cdb as C

    views = []
    for overlap in (50, 10**9):
        monkeypatch.setattr(C, "OVERLAP", overlap)
        st = CliStore(base / f"o{overlap}")
        st.ok("vadddomain", D, "Pm-pass-1")
        with patched_environ(st.env):
            open_backend().add_users(D, [NewUser(f"u{i:03d}", hashed=fake_hash(i)) for i in range(120)])
        d = base / f"o{overlap}" / "vpopmail" / "domains" / D
        lines = (d / "vpasswd").read_bytes().replace(str(base / f"o{overlap}").encode(), b"").splitlines()
        views.append(([x for x in lines if not x.startswith(b"postmaster:")],  # its salt is random
                      sorted(p.name for p in d.iterdir())))
        assert st.run("vcli", "check").rc == 0  # the cdb is vpasswd's, every tree in place
    assert views[0] == views[1]
    monkeypatch.setattr(C, "OVERLAP", 50)
    st = CliStore(base / "failing")
    st.ok("vadddomain", D, "Pm-pass-1")
    before = st.snapshot()

    def broken(lines):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(C, "build_cdb", broken)
    with patched_environ(st.env):
        with pytest.raises(Exception, match="No space left"):
            open_backend().add_users(D, [NewUser(f"u{i:03d}", hashed=fake_hash(i)) for i in range(120)])
    assert st.snapshot() == before
