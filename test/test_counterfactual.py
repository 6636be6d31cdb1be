"""Counterfactual relabels: the recorded frame, another object named, the expert's action."""

import dataclasses

import numpy as np
import pytest

from vla_ros.datasets.episodes import EpisodeDataset
from vla_ros.evaluation.rollout import make_sim, proprio_vector, rollout
from vla_ros.sim.expert import ScriptedExpert
from vla_ros.sim.tasks import get_task
from vla_ros.training.counterfactual import (
    counterfactual_samples,
    relabel_episode,
    untouched_frames,
)


def frame_of(episode, sample) -> int:
    """The recorded frame a sample was made from (its proprio is unique to it)."""
    hits = [t for t in range(len(episode))
            if np.array_equal(episode.proprio[t], sample['proprio'])]
    assert len(hits) == 1 and np.array_equal(episode.images['front'][hits[0]],
                                             sample['images']['front'])
    return hits[0]


@pytest.fixture(scope='module')
def sim():
    s = make_sim((32, 24))
    yield s
    s.close()


@pytest.fixture(scope='module')
def episodes(sim):
    # Noisy execution (clean labels) so the hand spends frames away from the target.
    out = []
    for task, seed in (('reach', 3), ('pick_up', 4)):
        result = rollout(ScriptedExpert(), task, seed, 'train', record=True,
                         image_size=(32, 24), sim=sim, action_noise=0.2, noise_seed=seed)
        assert result.success
        out.append(result.episode)
    return out


def test_set_arm_configuration_rebuilds_a_recorded_pose(sim):
    sim.reset(seed=5)
    for _ in range(5):
        sim.step_ee_twist([0.1, 0.05, -0.05, 0.0, 0.0, 0.2], 0.5, dt=0.1)
    ee_live = sim.ee_pose()[0].copy()
    proprio = proprio_vector(sim)
    sim.reset(seed=5)
    assert np.linalg.norm(sim.ee_pose()[0] - ee_live) > 0.02  # home is elsewhere
    sim.set_arm_configuration(proprio[:7], proprio[7])
    np.testing.assert_allclose(sim.ee_pose()[0], ee_live, atol=1e-6)
    assert abs(sim.gripper_opening() - proprio[7]) < 1e-6
    with pytest.raises(ValueError, match='finite'):
        sim.set_arm_configuration(np.full(7, np.nan), 1.0)


@pytest.mark.parametrize('index', [0, 1])
def test_naming_the_recorded_target_reproduces_the_recorded_labels(sim, episodes, index):
    episode = episodes[index]
    target = episode.metadata['target']
    samples = relabel_episode(episode, sim, ScriptedExpert(), np.random.default_rng(0),
                              candidates=(target,))
    assert samples, 'the noisy episode should have frames away from its target'
    actions = {s['metadata']['instruction']: None for s in samples}
    assert list(actions) == [episode.instruction]  # same template, same object phrase
    for sample in samples:
        frame = frame_of(episode, sample)
        np.testing.assert_allclose(sample['actions'][0], episode.actions[frame], atol=1e-4)


def test_relabels_name_another_object_and_head_for_it(sim, episodes):
    episode = episodes[0]
    meta = episode.metadata
    samples = relabel_episode(episode, sim, ScriptedExpert(), np.random.default_rng(1))
    assert 0 < len(samples) <= len(episode)
    names = {s['metadata']['target'] for s in samples}
    assert meta['target'] not in names and names <= set(meta['placements'])
    for s in samples:
        assert s['metadata']['counterfactual_of'] == meta['target']
        assert s['instruction'] != episode.instruction
        colour, shape = s['metadata']['target'].split('_')
        assert f'{colour} {shape}' in s['instruction']
        assert s['valid'].tolist() == [True] and s['actions'].shape == (1, 7)
    # From the first frame (home, fingers high above the table) the expert travels
    # straight towards the newly named object.
    first = [s for s in samples if frame_of(episode, s) == 0]
    assert first
    sim.reset(seed=0, placements={n: p for n, p in meta['placements'].items()})
    sim.set_arm_configuration(episode.proprio[0][:7], episode.proprio[0][7])
    ee = sim.ee_pose()[0]
    goal = np.array(meta['placements'][first[0]['metadata']['target']][:2])
    move = first[0]['actions'][0, :2]
    assert move @ (goal - ee[:2]) / np.linalg.norm(move) / np.linalg.norm(goal - ee[:2]) > 0.9


def test_frames_near_the_named_object_or_holding_something_are_left_out(sim, episodes):
    pick = episodes[1]
    samples = relabel_episode(pick, sim, ScriptedExpert(), np.random.default_rng(2),
                              per_frame=3, min_distance=0.06)
    frames = [frame_of(pick, s) for s in samples]
    assert frames and all(pick.proprio[t][7] > 0.9 for t in frames)
    assert any(pick.proprio[t][7] <= 0.9 for t in range(len(pick)))  # it did close
    sim.reset(seed=0, placements=pick.metadata['placements'])
    for s, t in zip(samples, frames, strict=True):
        sim.set_arm_configuration(pick.proprio[t][:7], pick.proprio[t][7])
        named = np.array(pick.metadata['placements'][s['metadata']['target']][:2])
        assert np.linalg.norm(sim.ee_pose()[0][:2] - named) >= 0.06 - 0.002  # settled pose
    everything = relabel_episode(pick, sim, ScriptedExpert(), np.random.default_rng(2),
                                 per_frame=3, min_distance=10.0)
    assert everything == []  # no object is 10 m away


def test_dataset_relabels_are_reproducible_and_need_layouts(episodes):
    dataset = EpisodeDataset(list(episodes))
    a = counterfactual_samples(dataset, 1, seed=3)
    b = counterfactual_samples(dataset, 1, seed=3)
    assert len(a) == len(b) > 0
    assert [s['instruction'] for s in a] == [s['instruction'] for s in b]
    np.testing.assert_array_equal(np.stack([s['actions'] for s in a]),
                                  np.stack([s['actions'] for s in b]))
    some = counterfactual_samples(dataset, 1, seed=3, rate=0.3)
    assert 0 < len(some) < 0.6 * len(a)
    chunked = counterfactual_samples(dataset, 4, seed=3)
    assert chunked and chunked[0]['actions'].shape == (4, 7)
    stripped = EpisodeDataset([type(e)(e.instruction, e.action_space, e.control_period,
                                       e.images, e.actions, e.stamps, e.proprio, {})
                               for e in episodes])
    with pytest.raises(ValueError, match='layout'):
        counterfactual_samples(stripped, 1)


def test_training_adds_the_relabels_and_keeps_the_setting_for_resume(tmp_path, episodes):
    import tiny_mlp_policy

    from vla_ros.training.trainer import TrainConfig, TrainingError, train

    dataset = EpisodeDataset(list(episodes))
    recorded = sum(len(e) for e in episodes)

    def config(**kw):
        return TrainConfig(**{'policy': tiny_mlp_policy.NAME, 'output': str(tmp_path / 'run'),
                              'steps': 4, 'batch_size': 4, 'lora': None,
                              'checkpoint_every': 2, 'counterfactual': 1.0, **kw})

    summary = train(config(), dataset=dataset, progress=False, stop_after=2)
    relabels = len(counterfactual_samples(dataset, 4, seed=0))
    assert summary['counterfactual_samples'] == relabels > 0
    assert summary['num_samples'] == recorded + relabels
    with pytest.raises(TrainingError, match='counterfactual'):
        train(config(counterfactual=0.5), dataset=dataset, progress=False, resume=True)
    assert train(config(), dataset=dataset, progress=False, resume=True)['complete']
    for bad in ('yes', True, 1.5, -0.1):
        with pytest.raises(ValueError, match=r'rate in \[0, 1\]'):
            config(counterfactual=bad)


def test_relabels_from_state_follow_the_frame_alone_up_to_the_grasp(sim, episodes):
    from vla_ros.sim.expert import ExpertConfig
    from vla_ros.training.counterfactual import relabel_from_state

    relabelled, frames = relabel_from_state(EpisodeDataset(episodes))
    reach, pick_up = relabelled.episodes
    closing = int(np.flatnonzero(episodes[1].proprio[:, 7] <= 0.9)[0])
    touched = []
    for episode in episodes:
        get_task(episode.metadata['task']).sample(episode.metadata['seed'], 'train').reset(sim)
        touched.append(untouched_frames(episode, sim))
    # The noisy pick-up lands a finger on the cube's edge (frame 11) long before it closes
    # (frame 89) and slides it away: from that frame on the layout is out of date.
    assert touched[0] == len(reach) and touched[1] < closing
    closing = min(closing, touched[1])
    assert frames == len(reach) + closing
    # Pick-up frames from the first touch or closing one on keep the recorder's labels.
    np.testing.assert_array_equal(pick_up.actions[closing:], episodes[1].actions[closing:])
    assert reach.actions.shape == episodes[0].actions.shape
    gate = ExpertConfig().reach_tolerance
    descending = 0
    for episode, original in zip((reach, pick_up), episodes, strict=True):
        target = original.metadata['placements'][original.metadata['target']]
        for t in range(len(episode) if episode is reach else closing):
            sim.set_arm_configuration(episode.proprio[t, :7], episode.proprio[t, 7])
            ee = sim.ee_pose()[0]
            offset = np.asarray(target[:2]) - ee[:2]
            if np.linalg.norm(offset) > 0.05:
                # Far from the target, the label heads for it.
                assert episode.actions[t, :2] @ offset > 0, t
            elif episode is reach and np.linalg.norm(offset) < gate and ee[2] > 0.08:
                # Over the target within the gate, at travel height: the label goes down.
                assert episode.actions[t, 2] < 0, (t, episode.actions[t])
                descending += 1
    assert descending >= 1
    # An episode that disturbed an object is kept as recorded.
    wrong = dataclasses.replace(episodes[0], metadata={**episodes[0].metadata,
                                                       'wrong_object': True})
    kept, frames = relabel_from_state(EpisodeDataset([wrong]))
    assert frames == 0 and kept.episodes[0] is wrong
