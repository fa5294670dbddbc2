"""Quick concurrency trial for CI (8 processes x 60 classic commands + a daemon on one domain).

The full run (8 x 500) is `python tests/reliability/concurrency.py --full`; see docs/reliability.md.
"""

from reliability import concurrency


def test_eight_processes_and_a_daemon_lose_no_update():
    figs = concurrency.run(workers=8, ops=60, daemon_ops=60, seed=3)
    assert figs["errors"] == []
    assert figs["lost_updates"] == []
    assert figs["check_exit"] == 0, figs["check_output"]
    assert figs["cli_ops_ok"] == 8 * 60 and figs["daemon_ops"] == 60
    assert all(figs["by_kind"][k] > 0 for k in ("add", "mod", "passwd", "del", "shared")), figs["by_kind"]


def test_the_trial_does_catch_lost_updates_when_locking_is_off():
    """Harness self-test: the same run with the workers' locks disabled must be caught."""
    figs = concurrency.run(workers=8, ops=40, daemon_ops=20, seed=5, break_locks=True)
    assert figs["lost_updates"] or figs["check_exit"] != 0
