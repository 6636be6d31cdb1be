"""A short soak (~25 s) of the simulated arm with cameras at full rate.

The full one is a benchmark (``benchmarks/bench_faults.py --soak-minutes 10``). The
driver (MuJoCo, two cameras at 30 Hz) and the inference node run as processes. Two
inference stalls (SIGSTOP for 0.5 s) are injected: the only holds allowed are the ones
they explain, the watchdog must stop the arm within its target (plus a scheduling margin
on this shared machine), and RSS must not grow beyond the stated bound after the warm-up.
"""

import json

import pytest

from vla_ros.reliability.soak import SoakConfig, run_soak

pytestmark = [pytest.mark.graph, pytest.mark.slow]

SCHEDULING_MARGIN = 0.15  # s


def test_short_soak(ros_context, ros_env, tmp_path):
    config = SoakConfig(duration=20.0, warmup=5.0, stall_every=8.0, stall_seconds=0.5,
                        sample_period=1.0)
    result = run_soak(ros_context, ros_env, config, log_dir=str(tmp_path))
    summary = {k: v for k, v in result.items() if k not in ('rss_samples', 'config')}
    print('\n' + json.dumps(summary, indent=1))
    assert result['unsafe_commands'] == 0, result['unsafe_examples']
    assert result['exit_codes'] == {'driver': 0, 'inference': 0}
    assert result['starved_ticks_unexplained'] == 0
    # Every injected stall tripped the watchdog (catching up after one may trip it again
    # inside its recovery window). Other driver stops can only come from this shared
    # machine starving a process; they are reported with the gaps that tell which.
    assert result['driver_stops_explained_by_faults'] >= len(result['injected_stalls'])
    assert len(result['injected_stalls']) == 2
    for stall in result['injected_stalls']:
        assert stall['stop_latency_s'] is not None
        assert stall['stop_latency_s'] <= result['stall_stop_target_s'] + SCHEDULING_MARGIN
        assert stall['held_until_resumed']
    assert result['rss_within_bound'], result['rss']
    # Commands at the control rate, the driver at its rate, both cameras streaming.
    assert 9.0 <= result['command_rate_hz'] <= 10.5
    assert result['driver_rate_hz'] >= 45.0
    received = result['messages_received']
    assert received['camera/front/image_raw'] > 20 * 20 and received['vla/action_chunk'] > 50
    assert result['bag']['recorded'] is None  # hook only until vla_ros.bags lands
