"""RealPaths (vcli check's per-domain realpath cache) gives os.path.realpath's answers."""

import os

from vcli.store.fsutil import RealPaths


def test_i11_20_realpaths_agree_with_realpath(tmp_path):
    base = tmp_path / "dom"
    (base / "a" / "home").mkdir(parents=True)
    (base / "a" / "file").write_text("x")
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", base / "a" / "link")          # a home that is a symlink out
    os.symlink(base / "a", base / "b")                               # a hashed dir that is a symlink
    os.symlink("../a/home", base / "a" / "rel")                      # a relative link
    paths = [
        base / "a" / "home", base / "a" / "link", base / "b" / "home", base / "b" / "link",
        base / "a" / "rel", base / "a" / "missing", base / "nodir" / "missing",
        base / "a" / "file" / "under", f"{base}/a/../b/home", f"{base}/a/./home", f"{base}/a//home",
        f"{base}/a/home/", "relative/path", "/", base,
    ]
    rp = RealPaths()
    for p in map(str, paths):
        assert rp.real(p) == os.path.realpath(p), p
        is_link = os.path.islink(p)
        assert rp.real(p, is_link=is_link) == os.path.realpath(p), p
    assert rp.dir(str(base / "b")) == os.path.realpath(base / "a")
