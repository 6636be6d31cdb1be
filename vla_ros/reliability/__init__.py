"""Reliability campaign: fuzzed input, injected faults, soak runs and what they measure.

Shared by the test suite (short runs) and ``vla-ros bench faults`` / ``benchmarks/``
(longer runs). ``invariants`` defines what an unsafe command is (pure), ``graph`` holds the
rclpy plumbing (observed nodes, a command monitor, node processes), ``fuzz``, ``campaign``
and ``soak`` run the three kinds of experiment.
"""
