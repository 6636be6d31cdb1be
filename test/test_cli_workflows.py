"""``vla-ros status / instruct / policy`` as a user runs them (issue 18).

Pure parts (swap parameters, swap outcome, the status hint) are tested directly; the
commands run as subprocesses against a real inference node on this worker's domain.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vla_ros.paths import config_dir
from vla_ros.policy_swap import (
    ERROR,
    HOLDING,
    LOADING,
    RUNNING,
    SwapWatch,
    swap_parameters,
)
from vla_ros.status_hint import no_status_message


def _cli(*args):
    return [sys.executable, '-m', 'vla_ros.cli', *args]


# ------------------------------------------------------------------ pure logic
def test_swap_sets_every_family_specific_parameter():
    assert swap_parameters('octo') == {'policy': 'octo', 'model_path': '',
                                       'policy_params': '{}', 'unnorm_key': ''}
    values = swap_parameters('openvla', '/ckpt', '{"chunk_length": 2}', 'bridge')
    assert values == {'policy': 'openvla', 'model_path': '/ckpt',
                      'policy_params': '{"chunk_length": 2}', 'unnorm_key': 'bridge'}
    with pytest.raises(ValueError, match='JSON object'):
        swap_parameters('octo', params='[1, 2]')
    with pytest.raises(ValueError, match='not valid JSON'):
        swap_parameters('octo', params='{"a": ')
    with pytest.raises(ValueError, match='empty'):
        swap_parameters(' ')


def test_swap_watch_waits_for_its_own_load():
    watch = SwapWatch('octo', accepted_at=10.0, grace=0.5)
    # A status published before the swap (old policy running, an old failure note of
    # the same name) arrives right after the answer: not the outcome.
    assert watch.observe('scripted', RUNNING, "running (failed to load policy 'octo': x)",
                         10.1) is None
    assert watch.observe('octo', RUNNING, 'running', 10.2) is None
    assert watch.observe('octo', LOADING, "loading policy 'octo'", 10.3) is None
    assert watch.seen_loading
    outcome = watch.observe('octo', HOLDING, 'holding: no instruction', 10.4)
    assert outcome.ok and outcome.state == 'holding'


def test_swap_watch_reports_a_failed_load_with_the_reason():
    watch = SwapWatch('octo', accepted_at=0.0)
    assert watch.observe('scripted', RUNNING, "running (loading 'octo' in the background)",
                         0.1) is None
    outcome = watch.observe('scripted', RUNNING, "running (failed to load policy 'octo': "
                            "ValueError: bad; keeping 'scripted')", 0.3)
    assert not outcome.ok and 'ValueError: bad' in outcome.message
    # without a previous policy the node reports ERROR with the note
    watch = SwapWatch('pi0', accepted_at=0.0)
    outcome = watch.observe('', ERROR, "failed to load policy 'pi0': boom", 1.0)
    assert not outcome.ok and 'boom' in outcome.message
    # a fast load never seen in progress: trusted after the grace period
    watch = SwapWatch('scripted', accepted_at=0.0, grace=0.5)
    assert watch.observe('scripted', RUNNING, 'running', 0.2) is None
    assert watch.observe('scripted', RUNNING, 'running', 0.6).ok


def test_no_status_message_names_what_decides_discovery():
    env = {'ROS_DOMAIN_ID': '42', 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}
    text = no_status_message('/robot1/vla/status', 0, 3.0, [], env)
    for part in ('no inference node found', '/robot1/vla/status', 'ROS_DOMAIN_ID=42',
                 'ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST', 'vla-ros launch'):
        assert part in text, text
    text = no_status_message('/vla/status', 0, 3.0, ['/arm2/vla/status'], {})
    assert '--namespace arm2' in text and 'ROS_DOMAIN_ID=unset' in text, text
    text = no_status_message('/vla/status', 1, 10.0, [], env)
    assert '1 publisher' in text and 'no status arrived' in text, text


# ------------------------------------------------------------------ commands
@pytest.mark.graph
def test_status_with_nothing_running_says_where_it_listened(ros_env):
    start = time.monotonic()
    out = subprocess.run(_cli('status', '--namespace', 'nobody_here', '--timeout', '60'),
                         env=ros_env, capture_output=True, text=True, timeout=90)
    elapsed = time.monotonic() - start
    assert out.returncode == 1, out
    for part in ('no inference node found', '/nobody_here/vla/status',
                 f'ROS_DOMAIN_ID={ros_env["ROS_DOMAIN_ID"]}',
                 'ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST'):
        assert part in out.stderr, out.stderr
    # nothing publishes vla/status: no need to wait out --timeout
    assert elapsed < 30, elapsed


def _wait_for_node(context, name, proc, timeout=60.0):
    import rclpy

    probe = rclpy.create_node('ctrl_c_probe', context=context)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if name in probe.get_node_names():
                return
            time.sleep(0.1)
    finally:
        probe.destroy_node()
    raise AssertionError(f'{name} never appeared (exit code {proc.poll()})')


@pytest.mark.graph
@pytest.mark.parametrize('command, node, code', [
    (('status', '--namespace', 'ctrl_c', '--timeout', '120'), 'vla_status_cli', 130),
    (('instruct', 'wave', '--namespace', 'ctrl_c', '--timeout', '120'), 'vla_instruct', 130),
    (('policy', 'octo', '--namespace', 'ctrl_c', '--timeout', '120'), 'vla_policy_cli', 130),
    # --keep serves once the wait for the absent inference node has timed out (10 s;
    # discovering the peer alone took up to 1.8 s here)
    (('instruct', 'wave', '--namespace', 'ctrl_c', '--timeout', '10', '--keep'),
     'vla_instruct', 0),
])
def test_ctrl_c_stops_cleanly(command, node, code, ros_env, ros_context):
    import rclpy
    from std_msgs.msg import String
    from vla_ros_msgs.msg import PolicyStatus

    from vla_ros.nodes import qos

    # status: a publisher that never publishes, so it waits; instruct --keep: a
    # subscriber, so it gets to the serving loop.
    helper = rclpy.create_node('ctrl_c_peer', context=ros_context)
    helper.create_publisher(PolicyStatus, '/ctrl_c/vla/status', qos.STATUS)
    if '--keep' in command:
        helper.create_subscription(String, '/ctrl_c/instruction', lambda m: None,
                                   qos.INSTRUCTION)
    proc = subprocess.Popen(_cli(*command), env=ros_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_node(ros_context, node, proc)
        early = ''
        if '--keep' in command:  # Ctrl-C once it serves the instruction
            while 'serving' not in early and proc.poll() is None:
                early += proc.stderr.readline()
        else:
            time.sleep(1.5)  # inside the wait
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        stderr = early + stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        helper.destroy_node()
    assert 'Traceback' not in stderr, stderr
    assert proc.returncode == code, (proc.returncode, stderr)


@pytest.fixture
def inference_node(ros_env):
    """The scripted inference node as sim_arm starts it (its policy_params included)."""
    proc = subprocess.Popen(
        [sys.executable, '-m', 'vla_ros.nodes.inference_node', '--ros-args',
         '-r', '__node:=vla_inference', '-r', '__ns:=/swap',
         '--params-file', str(config_dir('robots', 'arm.yaml')),
         '--params-file', str(config_dir('policies', 'scripted.yaml'))],
        env=ros_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(_cli('status', '--json', '--namespace', 'swap',
                                      '--timeout', '5'),
                                 env=ros_env, capture_output=True, text=True)
            if out.returncode == 0 and json.loads(out.stdout)['policy'] == 'scripted':
                break
        else:
            raise AssertionError('the inference node did not start')
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _status(ros_env):
    out = subprocess.run(_cli('status', '--json', '--namespace', 'swap',
                              '--discovery-timeout', '10'), env=ros_env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.graph
def test_policy_swaps_across_families_and_reports_failed_loads(inference_node, ros_env):
    def policy(*args):
        return subprocess.run(_cli('policy', *args, '--namespace', 'swap'), env=ros_env,
                              capture_output=True, text=True, timeout=180)

    # scripted's policy_params ({"pattern": ...}) must not reach octo
    out = policy('octo')
    assert out.returncode == 0, out.stderr
    assert _status(ros_env)['policy'] == 'octo'  # loaded, not just requested
    assert "policy 'octo' loaded" in out.stdout
    # a load that fails: non-zero, with the node's reason; the old policy stays
    out = policy('octo', '--params', '{"bogus_argument": 1}')
    assert out.returncode == 1 and 'bogus_argument' in out.stderr, out
    out = policy('scripted', '--model-path', '/nonexistent/checkpoint')
    assert out.returncode == 1 and 'model_path' in out.stderr, out
    # the failed model_path is not kept by the next swap
    out = policy('scripted', '--params', '{"pattern": "constant"}')
    assert out.returncode == 0, out.stderr
    assert _status(ros_env)['policy'] == 'scripted'
    # refused by the node (unknown name) and by the CLI (params not a mapping)
    out = policy('nosuch')
    assert out.returncode == 1 and 'unknown policy' in out.stderr, out
    out = policy('octo', '--params', '[1]')
    assert out.returncode == 2 and 'JSON object' in out.stderr, out


def test_instruct_stays_a_discovery_announcement_period_after_joining():
    """A recorder `instruct` has not discovered yet must still get the latched sample.

    A process that joins may learn of a busy participant only from its periodic discovery
    announcement (3 s apart); the session test lost the instruction when `instruct` exited
    1 s after publishing, before it had discovered the recorder.
    """
    from vla_ros.cli import instruction_delivered
    from vla_ros.dds import DISCOVERY_SETTLE_S

    joined, published = 100.0, 100.6  # matched the node quickly
    assert DISCOVERY_SETTLE_S > 3.0
    # Acknowledged, lingered and matches settled: still not before the settle time.
    assert not instruction_delivered(published + 1.5, joined, published, published, 1.0)
    assert not instruction_delivered(joined + 3.0, joined, published, published, 1.0)
    assert instruction_delivered(joined + DISCOVERY_SETTLE_S, joined, published, published, 1.0)
    # A new match (the recorder, discovered late) restarts the one-second wait.
    late_match = joined + DISCOVERY_SETTLE_S - 0.2
    assert not instruction_delivered(joined + DISCOVERY_SETTLE_S, joined, published,
                                     late_match, 1.0)
    assert instruction_delivered(late_match + 1.0, joined, published, late_match, 1.0)
    # --linger longer than the settle time still rules.
    assert not instruction_delivered(joined + 4.0, joined, published, published, 5.0)
