"""Lock-step regression on the golden bags, the engine hooks it uses, and dataset export."""

import json
from pathlib import Path

import numpy as np
import pytest

from vla_ros.bags.cli import main as bag_main
from vla_ros.bags.reader import BagReader
from vla_ros.bags.regress import (
    RegressionError,
    default_parameters,
    parameters_from_file,
    parse_tolerance,
    run_regression,
)
from vla_ros.bags.writer import BagWriter
from vla_ros.paths import config_dir

GOLDEN = Path(__file__).parent / 'golden'
GOLDEN_BAGS = ('sim_arm', 'sim_arm_sine_ensemble')


def _golden_without(name, out, dropped):
    """Copy golden bag ``name`` to ``out`` without some of its messages.

    ``dropped(reader, messages)`` returns the indices of the messages left out.
    """
    with BagReader(GOLDEN / name) as reader, \
            BagWriter(out, 'sqlite3', 9, reader.registry,
                      custom_data=reader.metadata.custom_data) as writer:
        keys = {t.name: writer.add_topic(t.name, t.msgtype, t.offered_qos)
                for t in reader.topics}
        messages = list(reader.messages(list(keys)))
        drop = dropped(reader, messages)
        for i, m in enumerate(messages):
            if i not in drop:
                writer.write(keys[m.topic], m.timestamp, m.data)
    return out


@pytest.mark.parametrize('name', GOLDEN_BAGS)
def test_golden_bag_regresses_green(name):
    result = run_regression(GOLDEN / name)
    assert result.passed, [d for d in result.dimensions if not d.passed]
    assert result.schedule == 'recorded'
    assert result.ticks > 30 and result.chunks_replayed > 10
    # the comparison is not vacuous: the robot was really commanded to move
    vx = result.recorded[:, 0]
    assert np.nanmax(np.abs(vx)) > 0.01
    assert {d.name for d in result.dimensions} >= {'vx', 'vy', 'vz', 'gripper'}


def test_joint_space_golden_bag_regresses_joint_by_joint():
    # robot:=arm_joint: cmd/joint position targets, compared per joint name
    result = run_regression(GOLDEN / 'sim_arm_joint')
    assert result.passed, [d for d in result.dimensions if not d.passed]
    assert result.schedule == 'recorded' and result.ticks > 30 and result.chunks_replayed > 10
    names = [d.name for d in result.dimensions]
    assert names == [f'joint{i}' for i in range(1, 8)] + ['gripper']
    # not vacuous: the first two joints were commanded along a sine of 0.14 rad
    assert np.nanmax(result.recorded[:, 0]) - np.nanmin(result.recorded[:, 0]) > 0.2
    assert np.nanmax(np.abs(result.recorded[:, 1])) > 0.1


def test_a_changed_joint_policy_is_caught_on_the_joints_it_moves(tmp_path):
    # the first joint's amplitude changes: joint1 and joint2 (the sine pair) regress
    changed = {'action_space': 'joint7_gripper', 'chunk_length': 8, 'pattern': 'sine',
               'velocity': [0.12, -0.1, 0.0, -2.5, 0.0, 2.4, 0.0], 'gripper': 0.04,
               'image_size': [64, 48]}
    result = run_regression(GOLDEN / 'sim_arm_joint', policy_params=changed)
    failed = {d.name for d in result.dimensions if not d.passed}
    assert failed == {'joint1', 'joint2'}, failed
    assert run_regression(GOLDEN / 'sim_arm_joint', policy_params=changed,
                          tolerance='joints=0.05').passed
    out = tmp_path / 'report'
    assert bag_main(['regress', str(GOLDEN / 'sim_arm_joint'), '-o', str(out),
                     '--policy-params', json.dumps(changed)]) == 1
    report = json.loads((out / 'report.json').read_text())
    assert report['series']['dimensions'][:2] == ['joint1', 'joint2']
    assert (out / 'commands.png').stat().st_size > 10_000


def test_a_joint_bag_under_a_twist_configuration_is_refused():
    # the configuration's robot does not take the recorded policy's joint actions
    with pytest.raises(RegressionError, match='needs a joint-space robot configuration'):
        run_regression(GOLDEN / 'sim_arm_joint', overrides={'command_interface': 'ee_twist'})
    with pytest.raises(RegressionError, match='unknown dimension'):
        run_regression(GOLDEN / 'sim_arm_joint', tolerance='vx=1')


def test_golden_bags_are_small_and_carry_their_configuration():
    for name in GOLDEN_BAGS + ('sim_arm_joint',):
        size = sum(p.stat().st_size for p in (GOLDEN / name).iterdir())
        assert size < 1_000_000, (name, size)
        with BagReader(GOLDEN / name) as reader:
            params = json.loads(reader.metadata.custom_data['vla_ros/inference_parameters'])
            assert reader.problems == []
        assert params['policy'] == 'scripted'
        assert json.loads(params['policy_params'])['image_size'] == [64, 48]


def test_perturbed_policy_fails_with_report_and_plot(tmp_path, capsys):
    out = tmp_path / 'report'
    code = bag_main(['regress', str(GOLDEN / 'sim_arm'), '-o', str(out),
                     '--policy', 'scripted', '--policy-params', '{"velocity": [0.006, 0, 0]}'])
    assert code == 1
    assert 'REGRESSION' in capsys.readouterr().out
    report = json.loads((out / 'report.json').read_text())
    assert report['passed'] is False
    vx = next(d for d in report['dimensions'] if d['name'] == 'vx')
    # 0.06 vs 0.05 m/s (float32 actions)
    assert vx['exceed'] > 10 and abs(vx['max_abs_error'] - 0.01) < 1e-6
    assert all(d['passed'] for d in report['dimensions'] if d['name'] != 'vx')
    assert (out / 'commands.png').stat().st_size > 10_000
    assert 'REGRESSION' in (out / 'report.md').read_text()
    # the same run passes when the tolerance admits the change
    assert bag_main(['regress', str(GOLDEN / 'sim_arm'), '-o', str(tmp_path / 'ok'),
                     '--policy-params', '{"velocity": [0.006, 0, 0]}',
                     '--tolerance', 'vx=0.011']) == 0


def test_changed_chunk_strategy_is_caught():
    # same policy, different execution of its chunks: the ensemble golden bag notices
    result = run_regression(GOLDEN / 'sim_arm_sine_ensemble',
                            overrides={'ensemble_coefficient': 0.5})
    assert not result.passed


def test_engine_schedule_without_recorded_chunks(tmp_path):
    # a bag without vla/action_chunk (e.g. from another recorder): the engine schedules
    stripped = _golden_without('sim_arm', tmp_path / 'no_chunks', lambda _, messages: {
        i for i, m in enumerate(messages) if m.topic == '/vla/action_chunk'})
    result = run_regression(stripped, virtual_latency=0.01)
    assert result.schedule == 'engine' and result.chunks_replayed > 5
    moving = result.replayed[:, 0] > 0
    assert moving.sum() > 20 and np.allclose(result.replayed[moving, 0], 0.05)
    with pytest.raises(RegressionError, match='no vla/action_chunk'):
        run_regression(stripped, schedule='recorded')


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(RegressionError, match='unknown dimension'):
        parse_tolerance('vq=1')
    assert parse_tolerance('0.1,gripper=0.5')['vx'] == 0.1
    assert parse_tolerance('angular=0.2')['wz'] == 0.2
    with pytest.raises(RegressionError, match='unknown inference parameter'):
        run_regression(GOLDEN / 'sim_arm', overrides={'no_such_param': 1})
    with pytest.raises(RegressionError, match='cannot load policy'):
        run_regression(GOLDEN / 'sim_arm', policy='scripted',
                       policy_params={'pattern': 'zigzag'})
    empty = tmp_path / 'empty'
    with BagWriter(empty) as w:
        w.add_topic('/chatter', 'std_msgs/msg/String')
    with pytest.raises(RegressionError, match='no cmd/ee_twist'):
        run_regression(empty)
    assert bag_main(['regress', str(empty), '-o', str(tmp_path / 'r')]) == 2


def test_parameters_come_from_the_schema_and_config_files():
    from vla_ros import parameters

    defaults = default_parameters()
    assert defaults == parameters.defaults(parameters.INFERENCE)
    assert defaults['policy'] == 'scripted' and defaults['control_rate_hz'] == 10.0
    assert defaults['cameras'] == ['front']
    scripted = parameters_from_file(config_dir('policies', 'scripted.yaml'))
    assert json.loads(scripted['policy_params'])['pattern'] == 'constant'
    robot = parameters_from_file(config_dir('robots', 'arm.yaml'))
    assert robot['proprio_joints'][0] == 'joint1' and 'mobile' not in robot  # driver's only


def test_regression_does_not_need_rclpy():
    import subprocess
    import sys

    code = ('import sys; from vla_ros.bags.regress import resolve_parameters, LockstepReplay; '
            "p = resolve_parameters({}, configuration='sim_arm'); "
            "assert p['policy'] == 'scripted' and 'pattern' in p['policy_params'], p; "
            "assert 'rclpy' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True)


def test_engine_split_inference_matches_run_inference():
    from vla_ros.policies.scripted import ScriptedPolicy
    from vla_ros.runtime.engine import EngineConfig, Frame, InferenceEngine

    def engine():
        e = InferenceEngine(EngineConfig())
        e.finish_policy_load('scripted', ScriptedPolicy(image_size=(8, 8), pattern='sine'))
        e.set_instruction('go')
        e.set_image('front', np.zeros((8, 8, 3), np.uint8), 1.0)
        return e

    whole = engine().run_inference(iter([1.0, 1.2]).__next__)
    split = engine()
    job = split.begin_inference(1.0)
    assert split.inference_due(1.05) is False  # running: no second inference
    chunk, error = split.compute_chunk(job)
    result = split.finish_inference(job, chunk, error, 1.2)
    assert error == '' and np.array_equal(result.chunk.actions, whole.chunk.actions)
    assert split.status(1.2).inferences == 1
    # predict + add_chunk: an externally scheduled chunk from a chosen frame
    ext = engine()
    chunk, error = ext.predict({'front': Frame(np.zeros((8, 8, 3), np.uint8), 1.0)}, 1.1)
    ext.add_chunk(chunk, 1.1)
    assert np.array_equal(ext.command_at(1.1).ee_twist, split.command_at(1.1).ee_twist)
    assert ext.predict({}, 1.1)[1].startswith("policy 'scripted' failed")


def test_bags_become_training_episodes(tmp_path):
    from vla_ros.bags.dataset import bags_to_dataset
    from vla_ros.datasets.episodes import EpisodeDataset

    dataset, notes = bags_to_dataset([GOLDEN / 'sim_arm', GOLDEN / 'sim_arm_sine_ensemble'])
    assert len(dataset) == 2 and dataset.action_space == 'arm7'
    assert dataset.control_period == pytest.approx(0.1)
    forward = next(e for e in dataset.episodes if e.instruction == 'move the gripper forward')
    # commands are converted back to the policy's actions: 0.05 m/s * 0.1 s = 0.005 m
    assert np.allclose(forward.actions[:, 0], 0.005, atol=1e-7)
    assert np.allclose(forward.actions[:, 6], 1.0)
    assert forward.images['front'].shape[1:] == (48, 64, 3)
    assert forward.proprio is not None and forward.proprio.shape[0] == len(forward)
    sample = next(dataset.samples(4))
    assert sample['actions'].shape == (4, 7) and sample['instruction']
    assert bag_main(['to-dataset', str(GOLDEN / 'sim_arm'), '-o', str(tmp_path / 'ds'),
                     '--image-size', '32', '24']) == 0
    loaded = EpisodeDataset.load(tmp_path / 'ds')
    assert loaded.episodes[0].images['front'].shape[1:] == (24, 32, 3)


def test_failing_policy_is_a_regression_with_the_reason():
    result = run_regression(GOLDEN / 'sim_arm',
                            policy_params={'fail_after': 3, 'fail_mode': 'raise'})
    assert not result.passed
    assert any('ScriptedPolicyFault' in note for note in result.notes)
    # after the failure the engine holds (zero twist), as the live node would
    assert np.all(result.replayed[-5:, 0] == 0.0) and np.all(result.recorded[-5:, 0] > 0)


def test_regress_overrides_are_typed_by_the_schema():
    from vla_ros.bags.regress import parse_assignment

    assert parse_assignment('inference_rate_hz:=0') == ('inference_rate_hz', 0.0)
    assert type(parse_assignment('inference_rate_hz:=0')[1]) is float
    assert parse_assignment('model_path:=123') == ('model_path', '123')
    with pytest.raises(RegressionError, match='is not a number'):
        parse_assignment('control_rate_hz:=abc')
    with pytest.raises(RegressionError, match='no parameter'):
        parse_assignment('contrl_rate_hz:=10')


def test_a_recording_cut_inside_the_last_tick_is_not_a_regression(tmp_path):
    # Ctrl-C on the recorder between a tick's twist and its gripper command: the last
    # gripper message is missing. That tick is dropped with a note; the rest compares.
    cut = _golden_without('sim_arm', tmp_path / 'cut', lambda _, messages: {
        max(i for i, m in enumerate(messages) if m.topic == '/cmd/gripper')})
    full = run_regression(GOLDEN / 'sim_arm')
    result = run_regression(cut)
    assert result.passed and result.ticks == full.ticks - 1
    assert any('ended during the last control tick' in n for n in result.notes)


def test_a_tick_cut_by_the_start_of_the_recording_is_left_out(tmp_path):
    # The recorder subscribed to cmd/gripper just before cmd/joint: the first tick in
    # the bag has its gripper command only. That tick is dropped with a note. (This bag
    # also begins while a chunk executes, which the replay cannot reproduce exactly: the
    # step of the chunk the node was at is not in the bag; so only the session is
    # checked here.)
    from vla_ros.bags.session import load_session

    def before_the_first_gripper(reader, messages):
        def stamp(m):
            s = reader.decode(m).header.stamp
            return s.sec * 10**9 + s.nanosec

        first = min(stamp(m) for m in messages if m.topic == '/cmd/gripper')
        return {i for i, m in enumerate(messages) if m.topic in ('/cmd/joint', '/cmd/gripper')
                and (stamp(m) < first or (m.topic == '/cmd/joint' and stamp(m) == first))}

    cut = _golden_without('sim_arm_joint', tmp_path / 'cut', before_the_first_gripper)
    with BagReader(cut) as reader:
        session = load_session(reader)
    assert session.ticks[0].joint_names and session.ticks[0].gripper is not None
    assert any('began during the first control tick (cmd/joint' in p
               for p in session.problems)
    with BagReader(GOLDEN / 'sim_arm_joint') as reader:
        full = load_session(reader)
    first = next(t for t in full.ticks if t.gripper is not None)
    assert session.ticks[0].stamp_ns > first.stamp_ns  # the cut tick is not there


def test_joint_space_sessions_are_not_exported_as_end_effector_actions(tmp_path):
    code = bag_main(['to-dataset', str(GOLDEN / 'sim_arm_joint'), '-o', str(tmp_path / 'd')])
    assert code != 0


def test_a_control_process_recording_orders_ticks_at_their_decision():
    from vla_ros.bags.regress import recorded_decision_lead

    # The node computed each command control_process_lead_s before its deadline: a chunk
    # received in between was not there for that tick.
    assert recorded_decision_lead({'control_process': True, 'control_thread': True,
                                   'control_process_lead_s': 0.01}) == 0.01
    # Published by the node itself (no lead): older bags, the timer, simulated time.
    assert recorded_decision_lead({}) == 0.0
    assert recorded_decision_lead({'control_process': False,
                                   'control_process_lead_s': 0.01}) == 0.0
    assert recorded_decision_lead({'control_process': True, 'control_thread': False,
                                   'control_process_lead_s': 0.01}) == 0.0
    assert recorded_decision_lead({'control_process': True, 'use_sim_time': True,
                                   'control_process_lead_s': 0.01}) == 0.0


def test_a_chunk_is_ordered_by_the_command_the_node_computed_before_it():
    from vla_ros.bags.regress import _order_after_command

    stamps = np.array([1.0, 1.1, 1.2])
    decided = stamps - 0.0100  # estimated from receive times: 10 ms before each stamp
    # Received just after tick 1.1's estimated decision, but the node buffered it before
    # computing that command (it was last after 1.0): it goes before tick 1.1.
    key, priority, following = _order_after_command(1.0903, 1.0, stamps, decided)
    assert (key, priority) == (decided[1], 3) and list(following) == [1, 2]
    # Received just before it, but the node computed 1.1 first: after tick 1.1.
    key, priority, following = _order_after_command(1.0897, 1.1, stamps, decided)
    assert (key, priority) == (decided[1], 5) and list(following) == [2]
    # Receive times agreeing with the node: left where they are.
    key, priority, following = _order_after_command(1.05, 1.0, stamps, decided)
    assert (key, priority) == (1.05, 3) and list(following) == [1, 2]
    # Before every recorded tick, and after the last one.
    assert list(_order_after_command(0.5, 0.4, stamps, decided)[2]) == [0, 1, 2]
    key, priority, following = _order_after_command(1.3, 1.2, stamps, decided)
    assert (key, priority) == (1.3, 3) and following.size == 0
