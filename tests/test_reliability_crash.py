"""Quick crash and I/O-fault trials for CI: SIGKILL (or EIO/ENOSPC) a real command at sampled
steps, prove old-or-new state and a clean `vcli check`.

The full run (every step of each command, 10,000-user bulk adds) is
`python tests/reliability/crash.py --full`; see docs/reliability.md.
"""

from reliability import crash


def test_sigkill_anywhere_leaves_old_or_new_state_and_a_clean_check():
    figs = crash.run(step_trials={"add": 10, "delete": 10, "modify": 6, "password": 6, "domainquota": 8,
                                  "domainmod": 4},
                     time_trials={"bulk": 4, "delete": 2}, fault_trials={}, bulk=600, users=60, seed=7)
    crash.print_figures(figs)
    assert figs["failures"] == [], figs["failures"][:3]
    assert figs["mixed"] == 0
    # the trials did hit the interesting window: some were killed mid-change and replayed,
    # and both outcomes occurred
    assert figs["pending_intent"] >= 10
    assert figs["old"] >= 5 and figs["new"] >= 5
    for name in ("add", "delete", "modify", "password", "bulk", "domainquota", "domainmod"):
        assert figs["per_scenario"][name]["killed"] >= 1, name


def test_an_io_error_at_any_step_is_one_line_exit_74_and_old_or_announced_new_state():
    figs = crash.run(step_trials={}, time_trials={}, fault_trials={"add": 8, "modify": 6, "quota": 4, "alias": 4},
                     bulk=50, users=30, seed=11)
    crash.print_figures(figs)
    assert figs["failures"] == [], figs["failures"][:3]
    io = figs["io_faults"]
    assert io["injected"] >= 20
    assert io["failed_cleanly"] >= 10
