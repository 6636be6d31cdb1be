"""A short soak (~25 s) of the simulated arm with cameras at full rate.

The full one is a benchmark (``benchmarks/bench_faults.py --soak-minutes 10``). The
driver (MuJoCo, two cameras at 30 Hz) and the inference node run as processes. Two
inference stalls (SIGSTOP for 1 s) are injected: the only holds allowed are the ones
they explain, the watchdog must stop the arm within its target (plus a scheduling margin
on this shared machine), and RSS must not grow beyond the stated bound after the warm-up.
The soak is recorded by ``vla-ros bag record`` (a child process stopped with SIGINT after
the nodes): every message published on a reliable topic must be in the bag.
"""

import json

import pytest

from vla_ros.reliability.soak import SoakConfig, run_soak
from vla_ros.reliability.soak_bag import (
    RELIABLE_TOPICS,
    bag_recorder,
    compare_counts,
    header_stamp_ns,
)

pytestmark = [pytest.mark.graph, pytest.mark.slow]

# The watchdog's latency target (timeout + one driver period) is a benchmark figure
# (bench_faults --soak-minutes; all stalls within it there). Here the stall lasts 1 s and
# the stop must come well inside it: a fresh-clone CI run measured 0.53 s once, the driver
# starved with the other test worker at full load, where a margin of 0.15 s failed.
SCHEDULING_MARGIN = 0.45  # s


def test_short_soak(ros_context, ros_env, tmp_path):
    config = SoakConfig(duration=20.0, warmup=5.0, stall_every=8.0, stall_seconds=1.0,
                        sample_period=1.0)
    result = run_soak(ros_context, ros_env, config, log_dir=str(tmp_path),
                      recorder=bag_recorder(tmp_path, cameras=('camera/front/image_raw',),
                                            keep=False))
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
    # Commands at the control rate, the driver near its rate (MuJoCo and two cameras
    # rendering share 2 cores with the other test worker here; CI measured 44.4 of 50 Hz,
    # so the rate itself is a benchmark figure, bench_faults --soak-minutes), cameras on.
    assert 9.0 <= result['command_rate_hz'] <= 10.5
    assert result['driver_rate_hz'] >= 0.8 * config.driver_rate_hz
    received = result['messages_received']
    assert received['camera/front/image_raw'] > 20 * 20 and received['vla/action_chunk'] > 50
    bag = result['bag']
    assert bag['recorder_exit_code'] == 0 and bag['bag_problems'] == []
    for topic in RELIABLE_TOPICS:  # recorded == published, over at least ~20 s
        counts = bag['published_vs_recorded'][topic]
        assert counts['recorded'] == counts['published'], (topic, counts)
        assert counts['recorded'] >= 20 * (5 if topic != 'vla/action_chunk' else 2), counts
    assert bag['reliable_topics_match']
    # Best effort: reported, and the recorder kept nearly all frames at 30 Hz.
    front = bag['cameras_received_vs_recorded']['camera/front/image_raw']
    assert front['recorded'] >= 0.9 * front['received'] > 0


def test_header_stamp_read_from_cdr_bytes():
    from geometry_msgs.msg import TwistStamped
    from rclpy.serialization import serialize_message
    from vla_ros_msgs.msg import ActionChunk

    for cls in (TwistStamped, ActionChunk):
        msg = cls()
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1_795_555_232, 361_603_072
        assert header_stamp_ns(serialize_message(msg)) == 1_795_555_232_361_603_072
    with pytest.raises(ValueError, match='cannot hold'):
        header_stamp_ns(b'\x00\x01\x00\x00')


def test_compare_counts_uses_the_common_window():
    s = 10**9
    published = [2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 6 * s, 7 * s]  # matched at 2 s
    recorded = [1 * s, 2 * s, 3 * s, 4 * s, 6 * s, 6 * s, 7 * s]  # from 1 s; 5 s missing
    c = compare_counts(published, recorded)
    # after 2 s: 3, 4, 5, 6, 6, 7 published; the bag lacks the one stamped 5 s
    assert (c['published'], c['recorded'], c['missing']) == (6, 5, 1)
    assert c['recorded_total'] == 7 and c['not_recorded_at_s'] == [3.0]
    assert c['not_published_at_s'] == []
    assert compare_counts([1, 2], [])['missing'] == 2
    # The recorder got one more message as the publisher shut down: not a mismatch...
    tail = compare_counts([2 * s, 3 * s, 4 * s], [1 * s, 2 * s, 3 * s, 4 * s, 5 * s])
    assert (tail['published'], tail['recorded'], tail['missing']) == (2, 2, 0)
    assert tail['recorded_after_window'] == 1
    # ...but a bag that lost the source's last messages still is.
    lost = compare_counts([2 * s, 3 * s, 4 * s, 5 * s], [1 * s, 2 * s, 3 * s])
    assert (lost['published'], lost['recorded'], lost['missing']) == (3, 1, 2)
    assert lost['not_recorded_at_s'] == [2.0, 3.0]
