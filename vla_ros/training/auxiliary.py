"""Auxiliary training targets from the simulator's ground truth (no ROS, no torch).

Demonstrations recorded in simulation carry the episode layout in their metadata. A policy
may learn to predict it from its image tokens while it learns the actions: a dense,
low-noise signal for the one thing a visuomotor policy trained from scratch finds hardest,
where each object is. Only training uses it; inference never sees these targets. Only a
policy that asks computes them (its ``collate`` calls :func:`simulator_targets`, as
OpenVLA's simulation variant :mod:`vla_ros.policies.openvla_sim` does), with the cameras
its spec names.

For every scene object (in ``OBJECTS`` order): x and y in the arm-base frame scaled to about
[-1, 1] over the table, and, for cubes, cos/sin of four times the yaw (a cube looks the same
every quarter turn; the grasp must line up with its faces). The object the instruction names
is given by its index (``target_indices``), for a probe of where *it* is. An object that
the episode moves (the pick-up target once the fingers have closed, a pushed target) has no valid
target, since the metadata only holds where it started.
"""

import functools
import math

import numpy as np

from vla_ros.sim.tasks import SCENE_OBJECTS

__all__ = ['OBJECTS', 'TARGET_DIM', 'object_targets', 'batch_object_targets',
           'target_indices', 'named_object_pixels', 'simulator_targets']

OBJECTS = tuple(SCENE_OBJECTS)
TARGET_DIM = 4
_X_CENTRE, _X_HALF = 0.5, 0.2    # the table's object area: x 0.3 .. 0.7 m
_Y_HALF = 0.3                    # y -0.3 .. 0.3 m
_OPEN = 0.9                      # proprio gripper opening above which nothing is held


def object_targets(metadata: dict | None, proprio=None) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, valid)`` of shape (len(OBJECTS), TARGET_DIM) for one sample.

    ``metadata`` is an episode's metadata (``placements``: name -> (x, y, yaw); ``task``;
    ``target``); ``proprio`` the sample's proprio vector, whose last entry is the gripper
    opening. Without placements every entry is invalid.
    """
    targets = np.zeros((len(OBJECTS), TARGET_DIM), np.float32)
    valid = np.zeros((len(OBJECTS), TARGET_DIM), bool)
    placements = (metadata or {}).get('placements') or {}
    task, target = (metadata or {}).get('task'), (metadata or {}).get('target')
    gripper_open = proprio is not None and float(np.asarray(proprio)[-1]) > _OPEN
    for i, name in enumerate(OBJECTS):
        if name not in placements:
            continue
        if name == target and (task == 'push' or (task == 'pick_up' and not gripper_open)):
            continue
        x, y, yaw = (float(v) for v in placements[name][:3])
        targets[i] = ((x - _X_CENTRE) / _X_HALF, y / _Y_HALF, math.cos(4 * yaw),
                      math.sin(4 * yaw))
        valid[i, :2] = True
        valid[i, 2:] = SCENE_OBJECTS[name].shape == 'cube'
    return targets, valid


def batch_object_targets(samples) -> tuple[np.ndarray, np.ndarray] | None:
    """Stacked targets of training samples, or None when no sample has a layout."""
    if not any((s.get('metadata') or {}).get('placements') for s in samples):
        return None
    pairs = [object_targets(s.get('metadata'), s.get('proprio')) for s in samples]
    return np.stack([t for t, _ in pairs]), np.stack([v for _, v in pairs])


def target_indices(samples) -> np.ndarray:
    """Index in ``OBJECTS`` of each sample's named object (int64; -1 when unknown)."""
    return np.array([OBJECTS.index(t) if (t := (s.get('metadata') or {}).get('target'))
                     in OBJECTS else -1 for s in samples], dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _scene():
    """One kinematic copy of the scene (never rendered): camera poses, object heights."""
    from vla_ros.sim.scene import ArmSim

    return ArmSim(image_size=(64, 64), cameras=())


@functools.lru_cache(maxsize=8)
def _fixed_camera(camera: str):
    """Pose and field of view of a camera that does not move with the arm, read once."""
    return _scene().camera_pose(camera)


def named_object_pixels(samples, image_size: tuple[int, int],
                        camera: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Where each sample's named object sits in ``camera``'s image, and whether that is known.

    Returns ``(points, valid)``: (B, 2) (row, column) in [-1, 1] on the pixel-centre grid of a
    (w, h) = ``image_size`` image (pixel ``i`` -> ``-1 + 2 i / (n - 1)``, the convention of
    the pixel readout), and (B,) bool. Known where the episode layout names the target, it
    has not been moved (as :func:`object_targets` decides) and it projects into the image.
    A camera fixed in the scene keeps its pose; one mounted on the arm (the wrist camera)
    has its pose rebuilt from each sample's proprioception (7 joints + gripper). None when
    no sample has a layout; ValueError for a camera the scene does not have.
    """
    if not any((s.get('metadata') or {}).get('placements') for s in samples):
        return None
    from vla_ros.sim.scene import project_points

    scene = _scene()
    fixed = scene.camera_is_fixed(camera)
    w, h = image_size
    points = np.zeros((len(samples), 2), np.float32)
    valid = np.zeros(len(samples), bool)
    for i, sample in enumerate(samples):
        metadata = sample.get('metadata') or {}
        proprio = sample.get('proprio')
        targets, known = object_targets(metadata, proprio)
        name = metadata.get('target')
        if name not in OBJECTS or not known[OBJECTS.index(name), 0]:
            continue
        if fixed:
            pose = _fixed_camera(camera)
        else:
            if proprio is None or len(proprio) != 8:
                continue
            scene.set_arm_configuration(proprio[:7], proprio[7])
            pose = scene.camera_pose(camera)
        x, y = (float(v) for v in metadata['placements'][name][:2])
        centre = [x, y, scene.object_half_height(name) + 1e-3]
        col, row = project_points([centre], *pose, (w, h))[0]
        if not (0 <= col < w and 0 <= row < h):
            continue
        points[i] = (-1 + 2 * (row - 0.5) / (h - 1), -1 + 2 * (col - 0.5) / (w - 1))
        valid[i] = True
    return points, valid


def simulator_targets(samples, cameras=(), image_size=None) -> dict[str, np.ndarray]:
    """The ground-truth arrays of a training batch, for the variant's auxiliary losses.

    ``object_targets``/``object_valid`` (B, objects, TARGET_DIM) and ``target_index`` (B,)
    when some sample has a layout; with ``cameras`` (the policy spec's, in its order) also
    ``target_pixel`` (B, cameras, 2) and ``target_pixel_valid`` (B, cameras): the named
    object's pixel in each camera's ``image_size`` = (w, h) image. Empty without layouts.
    """
    objects = batch_object_targets(samples)
    if objects is None:
        return {}
    targets = {'object_targets': objects[0], 'object_valid': objects[1],
               'target_index': target_indices(samples)}
    if cameras:
        found = [named_object_pixels(samples, image_size, c) for c in cameras]
        targets['target_pixel'] = np.stack([p for p, _ in found], 1)
        targets['target_pixel_valid'] = np.stack([v for _, v in found], 1)
    return targets
