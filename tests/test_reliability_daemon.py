"""Quick daemon load trial for CI: 40 clients for 3 s, 20 slowloris clients, 2,000 failed logins.

The full run (200 clients, 10 s, 10,000 failed logins) is `python tests/reliability/daemon_load.py`;
see docs/reliability.md.
"""

from reliability import daemon_load


def test_daemon_under_load_slowloris_and_a_login_flood():
    figs = daemon_load.run(clients=40, seconds=3.0, failed_logins=2000, slowloris=20, idle_timeout=2.0, seed=2)
    assert figs["errors"] == [], figs["daemon_log"][-2000:]
    assert figs["lost_updates"] == []
    assert figs["check_exit"] == 0, figs["check_output"]
    assert figs["ops"] > 200 and figs["writes"] > 100
    # every slowloris client was cut off near the idle timeout while the others were served
    assert figs["slowloris_cut"] == figs["slowloris"]
    assert figs["slowloris_cut_after_max_s"] < figs["idle_timeout"] + 2.0
    # the throttle engaged: the attacker's answers came slowly and most guesses were never checked
    assert figs["failed_logins_attempted"] == 2000
    assert figs["attacker_probe_p50_s"] >= 1.0
    assert figs["failed_logins_checked"] < 500
    # new clients got in throughout the flood, and the others' latency stayed near its normal
    assert figs["newcomer_refused"] == [] and figs["newcomer_logins"] > 0
    assert figs["login_after_flood"] == "+OK"
    # starvation shows in the median (the attacker's own answers take seconds); the p99 of a
    # 3-second sample is its ~10 slowest operations, which one disk stall of a shared VM can
    # fill (601 ms once in CI against 98 ms before, with the median 50 ms): a wider margin there
    assert figs["latency_during_p50_ms"] <= 3 * figs["latency_before_p50_ms"] + 100, figs
    assert figs["latency_during_p99_ms"] <= 3 * figs["latency_before_p99_ms"] + 750, figs
