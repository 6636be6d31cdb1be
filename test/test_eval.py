"""Tests of rollouts, demonstration collection, the eval report and the contact sheet."""

import dataclasses
import json
import os

os.environ.setdefault('MUJOCO_GL', 'egl')

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vla_ros.datasets.episodes import EpisodeDataset  # noqa: E402
from vla_ros.evaluation import cli  # noqa: E402
from vla_ros.evaluation.report import contact_sheet, summarize  # noqa: E402
from vla_ros.evaluation.rollout import (  # noqa: E402
    collect_demonstrations,
    eval_engine_config,
    make_sim,
    rollout,
    run_episodes,
)
from vla_ros.policies.scripted import ScriptedPolicy  # noqa: E402
from vla_ros.runtime.engine import EngineConfig  # noqa: E402
from vla_ros.sim.expert import ScriptedExpert  # noqa: E402


@pytest.fixture(scope='module')
def sim():
    s = make_sim((32, 32))
    yield s
    s.close()


def test_recorded_episode_matches_the_schema(sim):
    result = rollout(ScriptedExpert(), 'reach', 3, 'train', record=True, image_size=(32, 24),
                     sim=sim, frame_size=(40, 40))
    ep = result.episode
    n = result.steps
    assert result.success and len(ep) == n
    assert ep.images['front'].shape == (n, 24, 32, 3) and ep.images['wrist'].shape[0] == n
    assert ep.actions.shape == (n, 7) and ep.proprio.shape == (n, 8)
    np.testing.assert_allclose(ep.stamps, np.arange(n) * 0.1)
    assert ep.metadata['task'] == 'reach' and ep.metadata['success'] is True
    assert ep.instruction == result.instruction and ep.action_space == 'arm7'
    assert result.first_frame.shape == (40, 40, 3)
    # Frames change as the arm moves; proprio gripper starts open.
    assert np.abs(ep.images['wrist'][0].astype(int) - ep.images['wrist'][-1]).mean() > 1
    assert ep.proprio[0, -1] > 0.9


def test_collect_writes_a_loadable_dataset(tmp_path):
    summary = collect_demonstrations(tmp_path / 'demos', ['reach', 'pick_up'], 2, seed=10,
                                     image_size=(24, 24), cameras=('front',))
    data = EpisodeDataset.load(tmp_path / 'demos')
    assert len(data) == summary['kept'] == 4
    assert summary['tasks']['reach'] == {'attempted': 2, 'succeeded': 2,
                                         'succeeded_at_end': 2, 'kept': 2,
                                         'steps': sum(len(e) for e in data.episodes[:2])}
    # Episodes run to the horizon by default, with the per-frame done label.
    assert [len(e) for e in data.episodes] == [60, 60, 100, 100]
    assert summary['until_horizon'] is True
    for e in data.episodes:
        assert e.done[-1] and not e.done[0] and e.metadata['success_at_end']
    assert json.loads((tmp_path / 'demos' / 'collection.json').read_text())['kept'] == 4
    assert {e.metadata['task'] for e in data.episodes} == {'reach', 'pick_up'}
    assert all(e.metadata['split'] == 'train' for e in data.episodes)
    sample = next(data.samples(chunk_length=4))
    assert sample['images']['front'].shape == (24, 24, 3)
    with pytest.raises(FileExistsError):
        collect_demonstrations(tmp_path / 'demos', ['reach'], 1)


def test_eval_cli_json_and_contact_sheet(tmp_path, capsys):
    sheet = tmp_path / 'sheet.png'
    code = cli.main(['eval', '--policy', 'expert', '--episodes', '2', '--seed', '50',
                     '--json', '--no-progress', '--contact-sheet', str(sheet)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for key in ('success_rate', 'per_task', 'per_instruction', 'per_template',
                'mean_episode_length', 'mean_inference_latency_s', 'episodes_per_s',
                'wrong_object_rate'):
        assert key in report
    assert set(report['per_task']) == {'reach', 'push', 'pick_up'}
    assert report['episodes'] == 6 and report['success_rate'] == 1.0
    # Episodes run to the horizon: the expert still has the task achieved at the end.
    assert report['until_horizon'] and report['success_at_end_rate'] == 1.0
    assert report['gripper_chatter_events'] == 0 and report['lost_after_success'] == []
    assert sum(v['episodes'] for v in report['per_instruction'].values()) == 6
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] > 128 and img.shape[1] > 4 * 128
    # Successful episodes are framed green (BGR: green channel dominates the border).
    b, g, r = img[1, 1].astype(int)
    assert g > r + 50 and g > b + 50


def test_eval_cli_rejects_bad_input(capsys):
    with pytest.raises(SystemExit):
        cli.main(['eval', '--policy', 'expert', '--episodes', '0'])
    with pytest.raises(SystemExit):
        cli.main(['eval', '--policy', 'expert', '--policy-params', '[1]'])
    assert cli.main(['eval', '--policy', 'no_such_policy', '--no-progress']) == 2


class DistractedExpert(ScriptedExpert):
    """Goes for the first distractor instead of the named object."""

    def attach_simulator(self, sim, instance):
        super().attach_simulator(sim, dataclasses.replace(instance,
                                                          target=instance.distractors[0]))


def test_wrong_object_is_detected_and_ends_the_episode(sim):
    result = rollout(DistractedExpert(), 'pick_up', 4, 'test', sim=sim)
    assert not result.success and result.wrong_object
    assert result.steps < 60
    report = summarize([result])
    assert report['wrong_object_rate'] == 1.0 and report['failures'][0]['wrong_object']


def test_latency_starves_the_buffer_until_the_first_chunk(sim):
    policy = ScriptedPolicy(chunk_length=8, image_size=(16, 16), velocity=(0.0, 0.0, 0.0))
    result = rollout(policy, 'reach', 0, 'test', sim=sim, strategy='receding_horizon',
                     strategy_params={'execute_steps': 4}, inference_latency=0.25)
    assert not result.success and result.steps == 60
    assert result.hold_ticks == 3  # the chunk stamped 0.0 arrives at 0.25 -> tick 0.3
    assert result.inference_calls == 15  # every 4 ticks
    assert policy.calls == 15 and result.mean_inference_s >= 0


def test_eval_schedules_chunks_with_the_node_engine(sim):
    # A single-step policy behind latency: timed from its observation every action is late
    # (the robot holds all episode); timed from arrival, as the openvla/rt1/rt2 launch
    # configurations run it, it executes. The eval now measures which one the robot runs.
    policy = ScriptedPolicy(chunk_length=1, image_size=(16, 16))
    late = rollout(policy, 'reach', 0, 'test', sim=sim, inference_latency=0.15)
    assert late.hold_ticks == late.steps == 60 and late.inference_calls > 0
    config = eval_engine_config(policy.spec, chunk_timing='arrival')
    arrival = rollout(policy, 'reach', 0, 'test', sim=sim, inference_latency=0.15,
                      engine_config=config)
    # One worker, 1.5 ticks of latency: a chunk every second tick, serving one tick.
    assert arrival.steps - arrival.hold_ticks == arrival.inference_calls - 1 > 25
    # The engine's own triggers apply: no rate, infer when <= 2 actions are left.
    chunky = ScriptedPolicy(chunk_length=8, image_size=(16, 16), velocity=(0.0,) * 6)
    config = EngineConfig(control_rate_hz=10.0, inference_rate_hz=0.0, low_queue_depth=2)
    result = rollout(chunky, 'reach', 0, 'test', sim=sim, engine_config=config)
    assert result.steps == 60 and result.hold_ticks == 0
    assert result.inference_calls == 10  # ticks 0, 6, 12, ...: 8 actions, refill at 2 left
    with pytest.raises(ValueError, match='engine_config'):
        rollout(chunky, 'reach', 0, sim=sim, engine_config=config, replan_every=2)
    with pytest.raises(ValueError, match='inference_timeout'):
        rollout(chunky, 'reach', 0, sim=sim, inference_latency=2.5)


def test_eval_engine_config_reproduces_the_replan_schedule():
    spec = ScriptedPolicy(chunk_length=8, image_size=(16, 16)).spec
    config = eval_engine_config(spec, strategy_params={'execute_steps': 4})
    assert config.inference_rate_hz == pytest.approx(2.5) and config.low_queue_depth == 0
    assert config.chunk_timing == 'observation' and config.control_rate_hz == 10.0
    assert eval_engine_config(spec, strategy='temporal_ensemble').inference_rate_hz == 10.0
    assert eval_engine_config(spec, replan_every=20).inference_rate_hz == pytest.approx(0.5)
    with pytest.raises(ValueError, match='not both'):
        eval_engine_config(spec, replan_every=2, inference_rate_hz=1.0)


def test_eval_cli_takes_the_schedule_from_a_node_parameter_file(capsys):
    from vla_ros.bags.regress import default_parameters, parameters_from_file
    from vla_ros.inference_config import engine_config

    code = cli.main(['eval', '--policy', 'expert', '--episodes', '1', '--seed', '3',
                     '--tasks', 'reach', '--json', '--no-progress',
                     '--node-params', 'config/policies/openvla.yaml'])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    params = {**default_parameters(), **parameters_from_file('config/policies/openvla.yaml')}
    node = engine_config(params)
    assert report['schedule']['inference_rate_hz'] == node.inference_rate_hz == 5.0
    assert report['schedule']['chunk_timing'] == node.chunk_timing == 'arrival'
    assert report['schedule']['low_queue_depth'] == node.low_queue_depth
    assert report['strategy_params'] == node.strategy_params == {'execute_steps': 1}
    assert report['success_rate'] == 1.0
    code = cli.main(['eval', '--policy', 'expert', '--episodes', '1', '--no-progress',
                     '--node-params', 'config/policies/openvla.yaml', '--replan-every', '2'])
    assert code == 2 and '--replan-every' in capsys.readouterr().err


def test_simulated_frames_are_rendered_only_for_the_tick_they_belong_to(sim):
    from vla_ros.evaluation.rollout import _SimCameras

    cameras = _SimCameras(sim)
    frame = cameras.frame('front')
    assert frame.image((20, 10)).shape == (10, 20, 3)
    cameras.advance()
    with pytest.raises(RuntimeError, match='moved on'):
        frame.image((20, 10))
    blank = _SimCameras(sim, needs_images=False).frame('front').image((8, 6))
    assert blank.shape == (6, 8, 3) and not blank.any()


def test_policy_failures_hold_the_robot_and_are_counted(sim):
    policy = ScriptedPolicy(chunk_length=4, image_size=(16, 16), fail_mode='nan')
    result = rollout(policy, 'reach', 1, 'test', sim=sim)
    assert not result.success and result.steps == 60
    assert result.policy_errors == result.inference_calls > 0
    assert result.hold_ticks == 60 and 'non-finite' in result.first_error
    assert summarize([result])['policy_errors'] == result.policy_errors


def test_strategies_run_on_identical_seeds(sim):
    expert = ScriptedExpert(chunk_length=6)
    runs = {name: run_episodes(expert, ['reach'], 2, seed=30, strategy=name, sim=sim)
            for name in ('temporal_ensemble', 'latency_aware')}
    for results in runs.values():
        assert [r.instruction for r in results] == [r.instruction for r in
                                                    runs['latency_aware']]
        assert all(r.success for r in results)


class _LoggingExpert(ScriptedExpert):
    """The expert, keeping every chunk it returned."""

    def __init__(self):
        super().__init__()
        self.chunks = []

    def predict_chunk(self, observation):
        chunk = super().predict_chunk(observation)
        self.chunks.append(chunk.copy())
        return chunk


def test_action_noise_perturbs_execution_but_records_the_experts_labels(sim):
    clean = rollout(ScriptedExpert(), 'pick_up', 4, 'train', record=True, sim=sim)
    expert = _LoggingExpert()
    noisy = rollout(expert, 'pick_up', 4, 'train', record=True, sim=sim, action_noise=0.3,
                    noise_seed=11)
    # Labels are exactly what the expert asked for, tick by tick ...
    np.testing.assert_array_equal(noisy.episode.actions, np.concatenate(expert.chunks))
    assert noisy.episode.metadata['action_noise'] == 0.3
    assert clean.episode.metadata['action_noise'] == 0.0
    # ... while the executed motion was perturbed: the states visited differ.
    n = min(clean.steps, noisy.steps)
    assert np.abs(clean.episode.proprio[:n] - noisy.episode.proprio[:n]).max() > 0.01
    again = rollout(ScriptedExpert(), 'pick_up', 4, 'train', record=True, sim=sim,
                    action_noise=0.3, noise_seed=11)
    np.testing.assert_array_equal(again.episode.actions, noisy.episode.actions)
    with pytest.raises(ValueError, match='action_noise'):
        rollout(ScriptedExpert(), 'reach', 0, sim=sim, action_noise=float('nan'))
    with pytest.raises(ValueError, match='action_noise'):
        collect_demonstrations('unused', ['reach'], 1, action_noise=1.5)


def test_dagger_records_the_expert_labels_of_the_states_the_driver_visits(sim, tmp_path):
    # A driver that only creeps forward: the expert's labels must aim at the target instead.
    driver = ScriptedPolicy(chunk_length=1, image_size=(32, 32), velocity=(0.1, 0, 0, 0, 0, 0))
    labeler = _LoggingExpert()
    result = rollout(driver, 'reach', 6, 'train', record=True, image_size=(32, 32), sim=sim,
                     labeler=labeler)
    ep = result.episode
    assert not result.success and ep.metadata['labels'] == 'expert'
    np.testing.assert_array_equal(ep.actions, np.concatenate(labeler.chunks))
    assert len(labeler.chunks) == result.steps
    # The driver's command never changes; the expert's labels react to where it went.
    assert np.ptp(ep.actions[:, :3], axis=0).max() > 0.005
    with pytest.raises(ValueError, match='record'):
        rollout(driver, 'reach', 6, sim=sim, labeler=labeler)
    summary = collect_demonstrations(tmp_path / 'dagger', ['reach'], 2, seed=6,
                                     image_size=(32, 32), cameras=('front',), policy=driver,
                                     expert_labels=True)
    # Failed episodes are kept: the corrections are the point.
    assert summary['tasks']['reach']['kept'] == 2 > summary['tasks']['reach']['succeeded']
    assert summary['labels'] == 'expert'
    with pytest.raises(ValueError, match='policy'):
        collect_demonstrations(tmp_path / 'x', ['reach'], 1, expert_labels=True)


def test_rollout_rejects_bad_arguments(sim):
    with pytest.raises(ValueError):
        rollout(ScriptedExpert(), 'reach', 0, sim=sim, inference_latency=-0.1)
    with pytest.raises(ValueError):
        rollout(ScriptedExpert(), 'reach', 0, sim=sim, strategy='yolo')
    with pytest.raises(ValueError):
        rollout(object(), 'reach', 0, sim=sim)
    with pytest.raises(ValueError):
        contact_sheet([], 'x.png')
