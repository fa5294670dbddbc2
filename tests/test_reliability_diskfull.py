"""Quick disk-full trial for CI: each changing command on a small, really full tmpfs.

Needs root (it mounts a tmpfs); the full run is `python tests/reliability/diskfull.py --full`.
"""

from reliability import diskfull


def test_every_command_on_a_full_disk_fails_cleanly_or_succeeds_whole():
    figs = diskfull.run(bytes_free=(0, 8192, 20480, 65536), inodes_free=(0, 2, 5), bulk=200, users=30)
    assert figs["failures"] == [], [(f["what"], f["problems"]) for f in figs["failures"][:5]]
    assert figs["runs"] == 8 * 7
    # the sweep really ran out of space for every command, and some had room to finish
    assert figs["failed_cleanly"] >= 8 and figs["succeeded"] >= 8
    assert all("No space left on device" in m for m in figs["messages"]), figs["messages"]
