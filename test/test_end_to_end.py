"""End to end through the real ROS graph: MuJoCo driver + inference node as processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.graph, pytest.mark.slow]


def test_demo_moves_the_simulated_arm_as_commanded(tmp_path):
    from vla_ros.demo import run_demo

    summary = run_demo(output=tmp_path, duration=4.0, instruction='move the gripper forward')
    assert summary['success'], summary
    dx, dy, dz = summary['ee_displacement_m']
    # scripted policy: +0.005 m per 0.1 s along x -> 0.05 m/s; ~4 s of motion
    assert 0.08 < dx < 0.25 and abs(dy) < 0.01 and abs(dz) < 0.02, summary
    assert 9.0 <= summary['command_rate_hz'] <= 11.0
    assert summary['node_exit_codes'] == {'vla_driver': 0, 'vla_inference': 0}
    for name in ('camera.png', 'commands.png'):
        assert (tmp_path / name).stat().st_size > 10_000
    assert json.loads((tmp_path / 'summary.json').read_text())['success']


def test_shipped_policy_reaches_the_named_object_through_the_graph(tmp_path):
    from matplotlib.image import imread

    from vla_ros.demo import run_demo

    # The `make demo` reach episode: the shipped OpenVLA checkpoint in sim mode.
    summary = run_demo(output=tmp_path, duration=15.0, configuration='openvla_arm',
                       task='reach', task_seed=5002, task_split='train')
    assert summary['task_success'] and summary['seconds_to_success'] < 14.0, summary
    assert summary['task']['target'].replace('_', ' ') in summary['instruction']
    assert not summary['task']['wrong_object']
    assert isinstance(summary['task_success_at_end'], bool)
    assert summary['node_exit_codes'] == {'vla_driver': 0, 'vla_inference': 0}
    # start, the moment of success, end
    assert imread(tmp_path / 'camera.png').shape[1] == 1200


def test_reverse_instruction_moves_the_arm_back(tmp_path):
    from vla_ros.demo import run_demo

    summary = run_demo(output=tmp_path, duration=3.0, instruction='move the gripper back')
    assert summary['ee_displacement_m'][0] < -0.05, summary


def test_cli_launch_forwards_ctrl_c_and_stops_cleanly(ros_env):
    env = dict(ros_env, ROS_DOMAIN_ID=str((int(ros_env['ROS_DOMAIN_ID']) + 101) % 230 + 1))
    proc = subprocess.Popen([sys.executable, '-m', 'vla_ros.cli', 'launch', 'sim_arm',
                             'namespace:=robot1'], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        status = None
        deadline = time.monotonic() + 60
        while status is None and time.monotonic() < deadline:
            out = subprocess.run([sys.executable, '-m', 'vla_ros.cli', 'status', '--json',
                                  '--namespace', 'robot1', '--timeout', '5'],
                                 env=env, capture_output=True, text=True)
            if out.returncode == 0:
                status = json.loads(out.stdout)
                if status['state'] == 'loading':  # the policy process is still starting
                    status = None
                    time.sleep(0.5)
        assert status is not None and status['policy'] == 'scripted', status
        # hot swap through the CLI: unknown names are refused with the node's reason
        bad = subprocess.run([sys.executable, '-m', 'vla_ros.cli', 'policy', 'nope',
                              '--namespace', 'robot1'], env=env, capture_output=True,
                             text=True)
        assert bad.returncode == 1 and 'available' in bad.stderr
        ok = subprocess.run([sys.executable, '-m', 'vla_ros.cli', 'policy', 'scripted',
                             '--namespace', 'robot1'], env=env, capture_output=True,
                            text=True)
        assert ok.returncode == 0, ok.stderr
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # a failed assertion above: stop the launch the user's way
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                # the nodes run in sessions of their own: do not leave them to later tests
                subprocess.run(['pkill', '-KILL', '-f', 'vla_ros.(nodes|runtime).*robot1'])
    assert proc.returncode == 0, output
    leftover = subprocess.run(['pgrep', '-f', 'vla_ros.nodes.*__ns:=/robot1'],
                              capture_output=True, text=True)
    assert leftover.stdout.strip() == '', leftover.stdout
