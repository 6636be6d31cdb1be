"""Recorded sessions -> training episodes (``vla-ros bag to-dataset``, ``vla-ros train``).

One step per recorded control tick: the newest camera frame at the tick, the instruction
in force, and the commanded action converted back to action-space units (the inverse of
:class:`vla_ros.runtime.commands.ActionToCommand`): velocities times the control period,
the gripper opening as commanded (held value when the tick only held), the base twist
times the period. What the robot was told is the demonstration, whether a policy or a
teleoperator produced it. A new instruction starts a new episode. Holds before the first
motion and after the last one are dropped unless asked otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_ros.actions.spaces import ActionSpace, load_action_space
from vla_ros.bags.reader import BagReader
from vla_ros.bags.session import Session, load_session
from vla_ros.datasets.episodes import Episode, EpisodeDataset
from vla_ros.images import prepare_image

_LINEAR = ('x', 'y', 'z')
_ANGULAR = ('roll', 'pitch', 'yaw')
_BASE = ('base_x', 'base_y', 'base_yaw')


def _control_period(session: Session) -> float:
    rate = session.parameters.get('control_rate_hz')
    if rate:
        return 1.0 / float(rate)
    stamps = np.array([t.stamp for t in session.ticks])
    if len(stamps) < 2:
        raise ValueError('cannot tell the control period: fewer than 2 recorded ticks and no '
                         'recorded parameters')
    return float(np.median(np.diff(stamps)))


def _action_row(space: ActionSpace, tick, gripper: float, period: float) -> np.ndarray:
    row = np.zeros(space.dim, dtype=np.float32)
    names = space.names
    for i, name in enumerate(_LINEAR + _ANGULAR):
        if name in names:
            row[names.index(name)] = tick.ee_twist[i] * period
    if 'gripper' in names:
        row[names.index('gripper')] = gripper
    if tick.base is not None:
        for i, name in enumerate(_BASE):
            if name in names:
                row[names.index(name)] = tick.base[i] * period
    return np.clip(row, space.low, space.high)


def _newest(records, t):
    """The newest record whose stamp is at or before ``t`` (records sorted by stamp)."""
    best = None
    for r in records:
        if r.stamp <= t + 1e-9:
            best = r
        else:
            break
    return best


def session_episodes(session: Session, space: ActionSpace, source: str = '',
                     drop_idle: bool = True, image_size: tuple[int, int] | None = None,
                     ) -> tuple[list[Episode], list[str]]:
    """Split a session into episodes (one per instruction); notes say what was left out."""
    notes = []
    if not session.instructions:
        return [], [f'{source}: no instruction recorded; nothing to learn from']
    if not session.images:
        return [], [f'{source}: no camera images recorded']
    if session.joint_space:
        return [], [f'{source}: the commands are joint-space (cmd/joint); exporting them as '
                    f'{space.name!r} actions is not supported (only cmd/ee_twist sessions)']
    period = _control_period(session)
    frames = {cam: sorted(recs, key=lambda r: r.stamp) for cam, recs in session.images.items()}
    bounds = [t for t, _ in session.instructions] + [float('inf')]
    episodes = []
    for k, (start, text) in enumerate(session.instructions):
        ticks = [t for t in session.ticks if start <= t.stamp < bounds[k + 1]]
        gripper = next((t.gripper for t in ticks if t.gripper is not None), 1.0)
        steps = []
        for tick in ticks:
            images = {cam: _newest(recs, tick.stamp) for cam, recs in frames.items()}
            if any(img is None for img in images.values()):
                continue
            if tick.gripper is not None:
                gripper = tick.gripper
            steps.append((tick, images, _action_row(space, tick, gripper, period)))
        if drop_idle:
            moving = [i for i, (tick, _, _) in enumerate(steps)
                      if np.any(tick.ee_twist) or (tick.base is not None and np.any(tick.base))]
            steps = steps[moving[0]:moving[-1] + 1] if moving else []
        if len(steps) < 2:
            notes.append(f'{source}: instruction {text!r} has {len(steps)} usable steps; '
                         f'skipped')
            continue
        images = {}
        for cam in frames:
            stack = [s[1][cam].rgb if image_size is None else prepare_image(s[1][cam].rgb,
                                                                           image_size)
                     for s in steps]
            shapes = {a.shape for a in stack}
            if len(shapes) > 1:
                notes.append(f'{source}: camera {cam!r} changes size {sorted(shapes)}; '
                             f'pass --image-size')
                break
            images[cam] = np.stack(stack).astype(np.uint8)
        else:
            stamps = np.array([s[0].stamp for s in steps])
            proprio = None
            if session.joint_states:
                joints = [(j.recv, j.positions) for j in session.joint_states]
                rows = []
                for s in steps:
                    older = [p for t, p in joints if t <= s[0].stamp]
                    rows.append(older[-1] if older else None)
                if all(r is not None for r in rows) and len({len(r) for r in rows}) == 1:
                    proprio = np.stack(rows).astype(np.float32)
            episodes.append(Episode(
                instruction=text, action_space=space.name, control_period=period,
                images=images, actions=np.stack([s[2] for s in steps]), stamps=stamps,
                proprio=proprio, metadata={'source': source, 'namespace': session.namespace,
                                           'policy': session.parameters.get('policy', '')}))
    return episodes, notes


def bags_to_dataset(bags, action_space: str | ActionSpace = 'arm7',
                    cameras: tuple[str, ...] | None = None, namespace: str | None = None,
                    drop_idle: bool = True, image_size: tuple[int, int] | None = None,
                    ) -> tuple[EpisodeDataset, list[str]]:
    """Read every bag and return an EpisodeDataset plus notes on what was skipped."""
    space = load_action_space(action_space) if isinstance(action_space, (str, Path)) \
        else action_space
    episodes, notes = [], []
    for bag in bags:
        with BagReader(bag) as reader:
            session = load_session(reader, namespace, cameras)
            notes.extend(f'{bag}: {p}' for p in reader.problems + session.problems)
        found, skipped = session_episodes(session, space, str(bag), drop_idle, image_size)
        episodes.extend(found)
        notes.extend(skipped)
    if not episodes:
        raise ValueError('no usable episode in the given bags: ' + '; '.join(notes))
    return EpisodeDataset(episodes), notes
