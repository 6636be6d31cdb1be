"""Counterfactual instructions: the same frame, another object named, the expert's answer.

A demonstration pairs each frame with one instruction, so a policy can fit it while half
ignoring the words (head for the object that the scene makes likely, not the one named).
Simulated episodes carry their layout, and each frame's proprioception fixes the arm's
pose, so the scripted expert can be asked what it would command from that very state had
the instruction named another object. Those samples share the frame's images and differ
only in the words and the action: the policy cannot fit them without reading the
instruction.

A relabel is kept only where it is exactly the expert's command, not a guess:

- the hand is at least ``min_distance`` (horizontally) from the newly named object, so the
  expert's state machine is in its travel phase whatever it remembered (it leaves descend
  for travel beyond 4.5 cm and cannot have closed on an object it never reached);
- the fingers are open (an object in hand belongs to the recorded episode);
- the newly named object has not moved: its pose is rebuilt from the layout, so a relabel
  is only made for episodes in which no distractor was disturbed, and only for frames
  before the arm first touches any object (it may push one: a finger landing on a cube's
  edge slides it away, and the layout no longer shows where it is).

Supported tasks are reach and pick_up (a pushed scene changes what "behind the object"
means, and push has no training data yet). Only the simulator is needed; no ROS, no torch.
"""

from __future__ import annotations

import numpy as np

from vla_ros.policies.contract import Observation
from vla_ros.sim.tasks import SCENE_OBJECTS, TaskInstance, get_task

__all__ = ['RELABEL_TASKS', 'counterfactual_samples', 'relabel_episode',
           'relabel_from_state']

RELABEL_TASKS = ('reach', 'pick_up')
_GRIPPER_OPEN = 0.9   # proprio gripper opening above which the fingers hold nothing
_SUPPORTS = frozenset({'table'})  # what objects may touch without being disturbed


def _instance(metadata: dict, target: str):
    """The task instance of ``metadata``'s layout with ``target`` named instead."""
    task = get_task(metadata['task'])
    template = metadata['template']
    instruction = template.format(object=SCENE_OBJECTS[target].phrase('train'),
                                  direction='')
    placements = {n: tuple(float(v) for v in p[:3])
                  for n, p in metadata['placements'].items()}
    return TaskInstance(task, int(metadata.get('seed', 0)), 'train', target, instruction,
                        template, placements, metadata.get('direction'))


def untouched_frames(episode, sim) -> int:
    """How many leading frames of ``episode`` the arm spends without touching an object.

    ``sim`` must hold the episode's layout. Each frame's arm pose is rebuilt from its
    proprioception and checked for contact with any object at its layout pose; from the
    first touch on, an object may have moved.
    """
    placed = set((episode.metadata or {}).get('placements') or ())
    for t in range(len(episode)):
        sim.set_arm_configuration(episode.proprio[t, :7], episode.proprio[t, 7])
        if any(sim.contacts(name) - placed - _SUPPORTS for name in placed):
            return t
    return len(episode)


def relabel_episode(episode, sim, expert, rng: np.random.Generator,
                    min_distance: float = 0.06, per_frame: int = 1,
                    candidates: tuple[str, ...] | None = None,
                    rate: float = 1.0) -> list[dict]:
    """Counterfactual samples of one recorded episode (may be empty).

    A ``rate`` fraction of the frames (drawn with ``rng``) is relabelled; ``per_frame`` of
    the ``candidates`` (default: every object but the recorded target; drawn with ``rng``)
    are tried per frame; a sample has the keys of
    ``EpisodeDataset.samples`` with ``chunk_length`` = the expert's, the frame's images and
    proprio, the new instruction and the expert's chunk for it, and metadata naming the
    new target (``counterfactual_of``: the recorded one). Naming the recorded target
    itself reproduces the recorded expert's labels (the tests' check of the rebuild).
    """
    meta = episode.metadata or {}
    if meta.get('task') not in RELABEL_TASKS or not meta.get('placements') \
            or meta.get('target') not in meta['placements'] or meta.get('wrong_object') \
            or episode.proprio is None or episode.proprio.shape[1] != 8:
        return []
    if candidates is None:
        candidates = tuple(n for n in meta['placements'] if n != meta['target'])
    others = [n for n in candidates if n in meta['placements']]
    if not others:
        return []
    instances = {name: _instance(meta, name) for name in others}
    first = next(iter(instances.values()))
    first.reset(sim)  # the layout, settled; the arm is moved per frame below
    untouched = untouched_frames(episode, sim)
    spec = expert.spec
    chunk_length = spec.chunk_length
    blank = {c: np.zeros((spec.image_size[1], spec.image_size[0], 3), np.uint8)
             for c in spec.camera_names}  # the expert never looks at images
    samples = []
    for t in range(len(episode)):
        proprio = episode.proprio[t]
        if rng.random() >= rate or proprio[7] <= _GRIPPER_OPEN or t >= untouched:
            continue
        sim.set_arm_configuration(proprio[:7], proprio[7])
        ee = sim.ee_pose()[0]
        poses = sim.object_poses()
        picked = rng.choice(len(others), size=min(per_frame, len(others)), replace=False)
        for i in picked:
            name = others[int(i)]
            if np.linalg.norm(poses[name][0][:2] - ee[:2]) < min_distance:
                continue
            instance = instances[name]
            instance.initial_positions = {n: p.copy() for n, (p, _) in poses.items()}
            expert.attach_simulator(sim, instance)  # fresh state machine
            chunk = expert.predict_chunk(Observation(blank, instance.instruction,
                                                     stamp=float(episode.stamps[t])))
            samples.append({
                'images': {c: frames[t] for c, frames in episode.images.items()},
                'instruction': instance.instruction,
                'actions': np.asarray(chunk, np.float32),
                'valid': np.ones(chunk_length, bool),
                'proprio': proprio,
                'metadata': {**meta, 'target': name, 'instruction': instance.instruction,
                             'counterfactual_of': meta['target']},
            })
    return samples


def counterfactual_samples(dataset, chunk_length: int, seed: int = 0,
                           min_distance: float = 0.06, per_frame: int = 1,
                           rate: float = 1.0, progress: bool = False) -> list[dict]:
    """Counterfactual samples of every relabelable episode of ``dataset``, reproducibly.

    Raises ValueError when no episode carries a reach / pick_up layout (a dataset from
    bags, for instance): asking for relabels there is a mistake, not a no-op.
    """
    from vla_ros.evaluation.rollout import make_sim
    from vla_ros.sim.expert import ScriptedExpert

    episodes = [e for e in dataset.episodes
                if (e.metadata or {}).get('task') in RELABEL_TASKS
                and (e.metadata or {}).get('placements')]
    if not episodes:
        raise ValueError(f'counterfactual relabelling needs simulated {RELABEL_TASKS} '
                         f'episodes with their layout in the metadata; this dataset has none')
    rng = np.random.default_rng([seed, 7])
    expert = ScriptedExpert(chunk_length=chunk_length)
    sim = make_sim()
    samples: list[dict] = []
    try:
        iterator = episodes
        if progress:
            from tqdm import tqdm

            iterator = tqdm(episodes, desc='counterfactual relabels', unit='episode')
        for episode in iterator:
            samples.extend(relabel_episode(episode, sim, expert, rng, min_distance, per_frame,
                                           rate=rate))
    finally:
        sim.close()
    return samples


def relabel_from_state(dataset, progress: bool = False):
    """A copy of ``dataset`` whose simulated approach frames carry the current expert's labels.

    Relabelled: the frames before the arm first touches an object (:func:`untouched_frames`)
    and, in a pick-up episode, before the fingers start to close (opening above 0.9).
    Those labels follow from the frame's state alone: the frame is rebuilt from its
    proprioception and the layout (no object has moved yet in them) and a fresh expert
    labels it, so the label does not depend on what the recording expert remembered and
    follows the expert as it is now (its gates were widened and its cube grasp changed
    after the demonstrations were recorded). Closing and lifting frames need the
    recorder's memory (how long the fingers have been closing), and after a touch the
    layout may be out of date: those keep their labels; episodes that disturbed an
    object are kept whole. Returns
    ``(dataset, number of relabelled frames)``.
    """
    import dataclasses

    from vla_ros.datasets.episodes import EpisodeDataset
    from vla_ros.evaluation.rollout import make_sim
    from vla_ros.sim.expert import ScriptedExpert

    expert = ScriptedExpert(chunk_length=1)
    spec = expert.spec
    blank = {c: np.zeros((spec.image_size[1], spec.image_size[0], 3), np.uint8)
             for c in spec.camera_names}
    sim = make_sim()
    episodes, frames = [], 0
    try:
        iterator = dataset.episodes
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc='relabel from state', unit='episode')
        for episode in iterator:
            meta = episode.metadata or {}
            if meta.get('task') not in RELABEL_TASKS or meta.get('wrong_object') \
                    or meta.get('target') not in (meta.get('placements') or {}) \
                    or episode.proprio is None or episode.proprio.shape[1] != 8:
                episodes.append(episode)
                continue
            instance = _instance(meta, meta['target'])
            instance.reset(sim)
            end = untouched_frames(episode, sim)
            if meta['task'] == 'pick_up':  # and before the first frame whose fingers close
                closing = np.flatnonzero(episode.proprio[:, 7] <= _GRIPPER_OPEN)
                end = min(end, closing[0] if len(closing) else len(episode))
            chosen = np.arange(end)
            actions = np.array(episode.actions, np.float32, copy=True)
            for t in chosen:
                sim.set_arm_configuration(episode.proprio[t, :7], episode.proprio[t, 7])
                expert.attach_simulator(sim, instance)  # fresh state machine
                actions[t] = expert.predict_chunk(Observation(
                    blank, instance.instruction, stamp=float(episode.stamps[t])))[0]
            episodes.append(dataclasses.replace(episode, actions=actions))
            frames += len(chosen)
    finally:
        sim.close()
    return EpisodeDataset(episodes), frames
