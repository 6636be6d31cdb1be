"""A policy that says "done", and gripper hygiene, without ROS (fake clock).

Engine state DONE and hold, the gripper filter in the engine, the expert's hold to the
horizon, and the done label from episodes to a trained terminate dimension.
"""

import json

import numpy as np
import pytest

from vla_ros.actions.spaces import load_action_space
from vla_ros.datasets.episodes import Episode, EpisodeDataset
from vla_ros.images import prepare_image
from vla_ros.policies.contract import Policy, PolicySpec
from vla_ros.runtime.engine import EngineConfig, EngineState, InferenceEngine

FRAME = np.zeros((48, 64, 3), dtype=np.uint8)


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


class RowsPolicy(Policy):
    """Returns the next of ``rows`` (one action per call, chunk length 1)."""

    def __init__(self, rows, space='arm7_done'):
        space = load_action_space(space)
        # rows without a terminate value say "continue" (0)
        self.rows = [np.resize(np.r_[r, 0.0], space.dim).astype(np.float32)
                     if len(r) < space.dim else np.asarray(r, np.float32) for r in rows]
        self.calls = 0
        self._spec = PolicySpec(name='rows', action_space=space,
                                chunk_length=1, image_size=(64, 48))

    @property
    def spec(self):
        return self._spec

    def predict_chunk(self, observation):
        row = self.rows[min(self.calls, len(self.rows) - 1)]
        self.calls += 1
        return row[None]


def move(gripper=1.0, terminate=None):
    row = [0.01, 0, 0, 0, 0, 0, gripper]
    return row if terminate is None else row + [terminate]


def make_engine(policy, **config):
    engine = InferenceEngine(EngineConfig(chunk_strategy='receding_horizon',
                                          strategy_params={'execute_steps': 1},
                                          chunk_timing='arrival', **config))
    engine.finish_policy_load('rows', policy)
    return engine


def step(engine, clock, dt=0.1):
    """One camera frame, one inference, one control tick at the fake time."""
    engine.set_image('front', FRAME, clock())
    engine.run_inference(clock)
    command = engine.command_at(clock())
    clock.t += dt
    return command


def test_done_publishes_terminate_once_then_holds_until_a_new_instruction():
    clock = FakeClock()
    policy = RowsPolicy([move(), move(0.0), move(0.0, terminate=1.0), move()])
    engine = make_engine(policy)
    engine.set_instruction('pick up the red cube')
    first, second, done = (step(engine, clock) for _ in range(3))
    assert not first.terminate and not first.hold
    assert done.terminate and not done.hold  # the node publishes cmd/terminate on this tick
    status = engine.status(clock())
    assert status.state == EngineState.DONE
    assert status.instruction == 'pick up the red cube'
    assert "'pick up the red cube' complete" in status.message
    # Holds still, gripper unchanged (None -> the node keeps the last one: closed), no
    # further inference and no second terminate while the instruction stays.
    calls = policy.calls
    for _ in range(5):
        engine.set_image('front', FRAME, clock())
        assert not engine.inference_due(clock())
        command = engine.command_at(clock())
        assert command.hold and not command.terminate and command.gripper is None
        assert np.all(command.ee_twist == 0)
        clock.t += 0.1
    assert policy.calls == calls and engine.last_gripper == 0.0
    assert engine.status(clock()).state == EngineState.DONE
    # A new instruction starts the policy again.
    engine.set_instruction('reach the blue cylinder')
    command = step(engine, clock)
    assert not command.hold and engine.status(clock()).state == EngineState.RUNNING


def test_done_state_mentions_a_camera_problem_too():
    clock = FakeClock()
    engine = make_engine(RowsPolicy([move(terminate=1.0)]), stale_image_timeout=0.5)
    engine.set_instruction('reach the red cube')
    step(engine, clock)
    clock.t += 1.0
    status = engine.status(clock())
    assert status.state == EngineState.DONE and 'stale' in status.message


def test_a_policy_without_terminate_keeps_running():
    clock = FakeClock()
    policy = RowsPolicy([move()], space='arm7')
    engine = make_engine(policy)
    engine.set_instruction('reach the red cube')
    for _ in range(20):
        command = step(engine, clock)
        assert not command.hold and not command.terminate
    assert engine.status(clock()).state == EngineState.RUNNING


def test_engine_binary_gripper_mode_stops_chatter():
    # Near-threshold outputs after a grasp: 0.0 (grasp), then 0.55 / 0.45 alternating.
    rows = [move(1.0)] * 3 + [move(0.0)] * 3 + [move(0.55), move(0.45)] * 10
    grips = {}
    for mode in ('continuous', 'binary'):
        clock = FakeClock()
        engine = make_engine(RowsPolicy(rows, space='arm7'), gripper_mode=mode)
        engine.set_instruction('pick up the red cube')
        grips[mode] = [step(engine, clock).gripper for _ in rows]
    np.testing.assert_allclose(grips['continuous'][-4:], [0.55, 0.45, 0.55, 0.45], atol=1e-6)
    assert grips['binary'] == [1.0] * 3 + [0.0] * (len(rows) - 3)


def test_engine_gripper_settings_are_validated_and_reconfigurable():
    with pytest.raises(ValueError, match='close_threshold < open_threshold'):
        EngineConfig(gripper_mode='binary', gripper_close_threshold=0.8)
    with pytest.raises(ValueError, match='gripper_mode'):
        EngineConfig(gripper_mode='sticky')
    clock = FakeClock()
    rows = [move(0.0)] * 2 + [move(0.6)] * 3
    engine = make_engine(RowsPolicy(rows, space='arm7'))
    engine.set_instruction('go')
    engine.reconfigure(EngineConfig(chunk_strategy='receding_horizon',
                                    strategy_params={'execute_steps': 1},
                                    chunk_timing='arrival', gripper_mode='binary',
                                    gripper_open_threshold=0.55, gripper_min_dwell_s=0.0))
    assert [step(engine, clock).gripper for _ in rows] == [0.0, 0.0, 1.0, 1.0, 1.0]


# --- rollout and expert ----------------------------------------------------------------


@pytest.fixture(scope='module')
def sim():
    from vla_ros.evaluation.rollout import make_sim

    s = make_sim()
    yield s
    s.close()


def test_expert_holds_the_lifted_object_to_the_horizon(sim):
    from vla_ros.evaluation.rollout import rollout
    from vla_ros.sim.expert import ScriptedExpert

    result = rollout(ScriptedExpert(), 'pick_up', seed=3, split='train', sim=sim, record=True,
                     until_horizon=True, record_cameras=('front',), image_size=(32, 32))
    assert result.steps == 100 and result.success and result.success_at_end
    first = result.first_success_step
    done = result.episode.done
    assert done.dtype == bool and done.shape == (100,)
    # frame t shows the state before action t
    assert not done[:first].any() and done[first:].all()
    # Success counts from 5 cm; the expert lifts on to its 14 cm goal, then holds still
    # with the fingers closed until the horizon.
    actions = result.episode.actions
    still = np.flatnonzero(np.all(actions[:, :6] == 0, axis=1))
    assert still[0] < first + 10
    assert np.array_equal(still, np.arange(still[0], 100))
    assert np.all(actions[still[0]:, 6] == 0.0)
    assert result.episode.metadata['success_at_end'] is True
    # The old behaviour: the episode ends at the first success.
    short = rollout(ScriptedExpert(), 'pick_up', seed=3, split='train', sim=sim)
    assert short.steps == first and short.success and not short.until_horizon


def test_rollout_holds_after_the_policy_says_done(sim):
    from vla_ros.evaluation.rollout import rollout

    class StopAfter(RowsPolicy):
        needs_images = False

    policy = StopAfter([move()] * 4 + [move(terminate=1.0), move()])
    result = rollout(policy, 'reach', seed=0, split='train', sim=sim, until_horizon=True)
    assert result.terminated_step == 4 and policy.calls == 5  # no inference after done
    assert result.hold_ticks == result.steps - 5


def test_rollout_gripper_filter_is_the_engines(sim):
    """Eval filters the gripper in the engine's command path (engine_config), as the node."""
    from dataclasses import replace

    from vla_ros.actions.gripper import chatter_events
    from vla_ros.evaluation.rollout import eval_engine_config, rollout

    class Flicker(RowsPolicy):
        needs_images = False

    # closes, then flips open for single ticks: the chatter the binary mode removes
    rows = [move(1.0)] * 3 + [move(0.0)] * 3 + [move(1.0), move(0.0)] * 6 + [move(0.0)] * 60
    plain_config = eval_engine_config(Flicker(rows).spec)
    plain = rollout(Flicker(rows), 'reach', seed=0, split='train', sim=sim,
                    until_horizon=True, engine_config=plain_config)
    binary = rollout(Flicker(rows), 'reach', seed=0, split='train', sim=sim,
                     until_horizon=True,
                     engine_config=replace(plain_config, gripper_mode='binary'))
    period = plain.control_period
    assert len(chatter_events(plain.gripper_commands, period)) > 0
    assert chatter_events(binary.gripper_commands, period) == []
    assert set(binary.gripper_commands) <= {0.0, 1.0}


def test_dagger_labels_a_policy_with_a_stop_in_the_experts_space(sim):
    from vla_ros.evaluation.rollout import rollout
    from vla_ros.sim.expert import ScriptedExpert

    class Driver(RowsPolicy):
        needs_images = False

    result = rollout(Driver([move()]), 'reach', seed=2, split='train', sim=sim, record=True,
                     labeler=ScriptedExpert(), until_horizon=True, record_cameras=('front',),
                     image_size=(32, 32))
    episode = result.episode
    assert episode.action_space == 'arm7' and episode.actions.shape == (60, 7)
    assert episode.done.shape == (60,)
    with pytest.raises(ValueError, match='labeler'):
        rollout(Driver([move()], space='mobile_manipulator'), 'reach', sim=sim, record=True,
                labeler=ScriptedExpert())


def test_summarize_reports_at_end_and_chatter(sim):
    from vla_ros.evaluation.report import summarize
    from vla_ros.evaluation.rollout import run_episodes
    from vla_ros.sim.expert import ScriptedExpert

    results = run_episodes(ScriptedExpert(), ['reach'], 2, seed=0, split='train', sim=sim,
                           until_horizon=True)
    report = summarize(results)
    row = report['per_task']['reach']
    assert row['success_at_end'] == 2 and row['success_at_end_rate'] == 1.0
    assert row['gripper_chatter_events'] == 0 and report['lost_after_success'] == []
    assert row['mean_first_success_step'] < 60 == report['mean_episode_length']
    stopped = summarize(run_episodes(ScriptedExpert(), ['reach'], 1, seed=0, split='train',
                                     sim=sim))
    assert stopped['success_at_end'] is None  # not measured when success ends the episode


# --- done label -> terminate dimension --------------------------------------------------


def _episodes(done=True):
    rng = np.random.default_rng(0)
    out = []
    for instruction, hold_from in (('reach the red cube', 6), ('reach the blue cylinder', 4)):
        actions = np.zeros((10, 7), np.float32)
        actions[:hold_from, 0] = 0.02 if 'red' in instruction else -0.02
        actions[:, 6] = 1.0
        images = rng.integers(0, 256, (10, 40, 48, 3), dtype=np.uint8)
        flags = np.arange(10) >= hold_from if done else None
        out.append(Episode(instruction, 'arm7', 0.1, {'front': images, 'wrist': images},
                           actions, np.arange(10) * 0.1, np.zeros((10, 8), np.float32),
                           {}, flags))
    return EpisodeDataset(out)


def test_settled_done_waits_for_a_success_that_held():
    from vla_ros.training.done_label import settled_done

    done = np.array([0, 1, 1, 1, 0, 1, 1, 1, 1], bool)
    assert settled_done(done, 0).tolist() == done.tolist()
    assert settled_done(done, 2).astype(int).tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 1]
    assert not settled_done(done, 9).any()
    with pytest.raises(ValueError, match='hold_steps'):
        settled_done(done, -1)


def test_done_hold_steps_needs_the_done_label():
    from vla_ros.training.trainer import TrainConfig

    with pytest.raises(ValueError, match='done_hold_steps needs done_label'):
        TrainConfig(policy='openvla', data='d', output='o', done_hold_steps=3)
    with pytest.raises(ValueError, match='done_hold_steps must be'):
        TrainConfig(policy='openvla', data='d', output='o', done_label=True, done_hold_steps=-1)


def test_done_label_round_trips_and_becomes_the_last_dimension(tmp_path):
    from vla_ros.training.done_label import add_done_dimension, pad_done

    data = _episodes()
    loaded = EpisodeDataset.load(data.save(tmp_path / 'd'))
    np.testing.assert_array_equal(loaded.episodes[0].done, data.episodes[0].done)
    grown = add_done_dimension(loaded)
    assert grown.action_space == 'arm7_done' and grown.action_dim == 8
    np.testing.assert_array_equal(grown.episodes[0].actions[:, 7], [0] * 6 + [1] * 4)
    np.testing.assert_array_equal(grown.episodes[0].actions[:, :7], data.episodes[0].actions)
    with pytest.raises(ValueError, match='2 of 2 episodes have no done label'):
        add_done_dimension(_episodes(done=False))
    # Settled: done only once the success has held 2 frames before it.
    settled = add_done_dimension(loaded, hold_steps=2)
    np.testing.assert_array_equal(settled.episodes[0].actions[:, 7], [0] * 8 + [1] * 2)
    padded = pad_done([{'actions': np.ones((1, 7))}, {'actions': np.ones((1, 8))}], 8)
    assert padded[0]['actions'].tolist() == [[1] * 7 + [0]]
    assert padded[1]['actions'].shape == (1, 8)
    with pytest.raises(ValueError, match=r'done must be a \(10,\) bool'):
        Episode('x', 'arm7', 0.1, {}, np.zeros((10, 7)), np.arange(10) * 0.1,
                done=np.zeros(9, bool))


def test_grown_openvla_checkpoint_learns_the_done_label(tmp_path):
    from vla_ros.policies.contract import Observation
    from vla_ros.policies.registry import make_policy
    from vla_ros.training.done_label import grow_checkpoint
    from vla_ros.training.trainer import TrainConfig, train

    data = _episodes()
    source = tmp_path / 'plain'
    train(TrainConfig(policy='openvla', output=str(source), steps=2, batch_size=4,
                      checkpoint_every=0, seed=0), dataset=data, progress=False)
    plain = make_policy('openvla', model_path=str(source))
    assert plain.action_space.name == 'arm7'  # the source keeps today's behaviour
    grown = grow_checkpoint(source, tmp_path / 'grown')
    assert json.loads((grown / 'config.json').read_text())['action_space'] == 'arm7_done'
    with pytest.raises(FileExistsError):
        grow_checkpoint(source, grown)
    with pytest.raises(ValueError, match='already has'):
        grow_checkpoint(grown, tmp_path / 'again')
    with pytest.raises(ValueError, match='differs from policy'):  # data without the label
        train(TrainConfig(policy='openvla', output=str(tmp_path / 'x'), steps=1, batch_size=4,
                          model_path=str(grown), keep_statistics=True), dataset=data,
              progress=False)
    out = tmp_path / 'done'
    summary = train(TrainConfig(policy='openvla', output=str(out), steps=6, batch_size=4,
                                lr=3e-3, model_path=str(grown), keep_statistics=True,
                                done_label=True, checkpoint_every=0, seed=1),
                    dataset=data, progress=False)
    assert summary['complete'] and summary['steps'] == 6
    policy = make_policy('openvla', model_path=str(out))
    assert policy.action_space.names[-1] == 'terminate'
    stats = policy.statistics.select(None).action
    assert stats.q01[-1] == 0.0 and stats.q99[-1] == 1.0 and stats.mask[-1]
    episode = data.episodes[0]
    images = {c: prepare_image(episode.images[c][9], policy.spec.image_size)
              for c in ('front', 'wrist')}
    chunk = policy.predict_chunk(Observation(images, episode.instruction,
                                             proprio=np.zeros(8, np.float32)))
    assert chunk.shape == (1, 8) and 0.0 <= chunk[0, 7] <= 1.0


def test_demo_counts_gripper_chatter_from_stamped_commands():
    from vla_ros.demo import _chatter

    opened = [(t / 10, 1.0) for t in range(10)]
    # grasp at 1.0 s, open at 1.2 s and close at 1.3 s (2 events), release at 3.0 s (none)
    trace = opened + [(1.0, 0.0), (1.1, 0.0), (1.2, 0.6), (1.3, 0.2), (2.0, 0.0), (3.0, 1.0)]
    assert _chatter(trace, sent=0.0) == 2
    assert _chatter(opened, sent=0.0) == 0
    assert _chatter(trace, sent=2.5) == 0  # only what followed the instruction counts


def test_engine_states_match_the_status_message_constants():
    from vla_ros_msgs.msg import PolicyStatus

    from vla_ros.policy_swap import STATE_NAMES

    for state in EngineState:
        assert getattr(PolicyStatus, f'STATE_{state.name}') == int(state)
        assert STATE_NAMES[int(state)] == state.name.lower()  # vla-ros status / policy


def test_eval_cli_binary_gripper_and_stop_at_success(capsys):
    from vla_ros.evaluation import cli

    code = cli.main(['eval', '--policy', 'expert', '--episodes', '1', '--seed', '7',
                     '--tasks', 'pick_up', '--split', 'train', '--json', '--no-progress',
                     '--gripper-mode', 'binary', '--gripper-min-dwell', '0.3'])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report['gripper_filter'] == {'mode': 'binary', 'close_threshold': 0.3,
                                        'open_threshold': 0.7, 'min_dwell_s': 0.3}
    assert report['success_at_end'] == 1 and report['mean_episode_length'] == 100
    code = cli.main(['eval', '--policy', 'expert', '--episodes', '1', '--seed', '7',
                     '--tasks', 'pick_up', '--split', 'train', '--json', '--no-progress',
                     '--stop-at-success'])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and not report['until_horizon'] and report['mean_episode_length'] < 100
    assert report['gripper_filter'] is None and report['success_at_end'] is None
    code = cli.main(['eval', '--policy', 'expert', '--episodes', '1', '--no-progress',
                     '--gripper-mode', 'binary', '--gripper-close-threshold', '0.8'])
    assert code == 2 and 'close_threshold < open_threshold' in capsys.readouterr().err
