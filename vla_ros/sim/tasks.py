"""Language-conditioned manipulation tasks on the MuJoCo arm scene (no ROS, no torch).

Three task families, each over the four scene objects: ``reach`` ("reach the red cube"),
``push`` ("push the blue cylinder to the left") and ``pick_up`` ("pick up the yellow
sphere"). Every instruction names its object by colour *and* shape, and every check looks
at the named object only, so a policy that goes for a distractor fails.

:meth:`Task.sample` turns ``(seed, split)`` into a :class:`TaskInstance`: the target (and
push direction), the object layout with distractors, and an instruction. The ``train``
split uses the training templates and canonical object names; the ``test`` split uses
held-out paraphrases ("grab the red block") and a different layout stream, so evaluation
never sees a training instruction or a training layout of the same seed.

Frames and directions: positions are in the arm-base frame (x forward, away from the robot;
y to the robot's left; table top at z = 0). ``left`` and ``right`` are as seen in the
``front`` camera, the view the policies get, which faces the robot: left is -y.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    'SceneObject', 'SCENE_OBJECTS', 'DIRECTIONS', 'Outcome', 'TaskInstance', 'Task',
    'ReachTask', 'PushTask', 'PickUpTask', 'TASKS', 'SPLITS', 'get_task', 'task_names',
    'REACH_TOLERANCE', 'PUSH_DISTANCE', 'PUSH_LATERAL_TOLERANCE', 'LIFT_HEIGHT',
    'DISTURB_TOLERANCE', 'surface_distance',
]

SPLITS = ('train', 'test')

# Success thresholds (metres).
REACH_TOLERANCE = 0.03          # fingertip point to the object's surface
PUSH_DISTANCE = 0.08            # displacement along the named direction
PUSH_LATERAL_TOLERANCE = 0.04   # displacement across it
PUSH_MAX_RISE = 0.02            # higher than this above its start = lifted, not pushed
LIFT_HEIGHT = 0.05              # pick_up: centre raised at least this much
DISTURB_TOLERANCE = 0.03        # a distractor moved further than this = wrong object
FINGER_GEOMS = ('finger_left', 'finger_right')

# Where targets are placed (x, y ranges): reachable with the hand pointing down.
_WORK_X, _WORK_Y = (0.38, 0.64), (-0.2, 0.2)
# Where distractors may go, and the minimum centre-to-centre gap between objects.
_SPAWN_X, _SPAWN_Y = (0.36, 0.68), (-0.25, 0.25)
_MIN_GAP = 0.1
# Push layouts: the goal must stay in this box; no distractor within _CORRIDOR of the
# path from behind the target to past the goal, so the pusher only touches the target.
_PUSH_GOAL_X, _PUSH_GOAL_Y = (0.34, 0.68), (-0.26, 0.26)
_PUSH_TRAVEL = 0.12
_CORRIDOR = 0.09


@dataclass(frozen=True)
class SceneObject:
    """How instructions refer to one scene object.

    ``shape`` is the training noun; ``synonyms`` are extra nouns used only in the held-out
    test paraphrases ("block" for a cube).
    """

    name: str
    colour: str
    shape: str
    synonyms: tuple[str, ...] = ()

    def phrase(self, split: str = 'train', rng: np.random.Generator | None = None) -> str:
        """Return 'red cube' (train) or, for test, the canonical or a synonym noun."""
        nouns = (self.shape,) if split == 'train' else (self.shape,) + self.synonyms
        noun = nouns[int(rng.integers(len(nouns)))] if rng is not None else nouns[0]
        return f'{self.colour} {noun}'


SCENE_OBJECTS = {
    'red_cube': SceneObject('red_cube', 'red', 'cube', ('block',)),
    'blue_cylinder': SceneObject('blue_cylinder', 'blue', 'cylinder', ('can',)),
    'green_cube': SceneObject('green_cube', 'green', 'cube', ('block',)),
    'yellow_sphere': SceneObject('yellow_sphere', 'yellow', 'sphere', ('ball',)),
}

# Unit xy vectors in the arm-base frame; phrases per split (train, test).
DIRECTIONS = {
    'left': ((0.0, -1.0), 'to the left', 'leftwards'),
    'right': ((0.0, 1.0), 'to the right', 'rightwards'),
    'forward': ((1.0, 0.0), 'away from the robot', 'further from the robot'),
    'backward': ((-1.0, 0.0), 'towards the robot', 'closer to the robot'),
}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    return split


def surface_distance(sim, point: np.ndarray, name: str) -> float:
    """Distance (m) from ``point`` (arm-base frame) to the surface of object ``name``.

    Zero when the point is inside the object. Exact for the scene's boxes, upright-or-not
    cylinders and spheres, computed in the object's own frame.
    """
    from vla_ros.sim.kinematics import quat_to_rotation

    pos, quat = sim.object_poses()[name]
    local = quat_to_rotation(quat).T @ (np.asarray(point, float) - pos)
    kind, size = sim.object_shape(name)
    if kind == 'box':
        return float(np.linalg.norm(np.maximum(np.abs(local) - size, 0.0)))
    if kind == 'cylinder':
        radial = max(math.hypot(local[0], local[1]) - size[0], 0.0)
        return math.hypot(radial, max(abs(local[2]) - size[1], 0.0))
    return max(float(np.linalg.norm(local)) - float(size[0]), 0.0)


@dataclass(frozen=True)
class Outcome:
    """What the privileged checks say about the scene right now.

    ``wrong_object``: a distractor was moved (or, for reach, is the object being reached).
    ``metrics`` holds the measured quantities behind the verdict, for reports.
    """

    success: bool
    wrong_object: bool
    metrics: dict = field(default_factory=dict)


@dataclass
class TaskInstance:
    """One episode of a task: layout, target, instruction; judges the simulator state.

    Call :meth:`reset` to lay the scene out (it records the objects' start positions,
    which the push / disturbance checks compare against), then :meth:`evaluate`.
    """

    task: 'Task'
    seed: int
    split: str
    target: str
    instruction: str
    template: str
    placements: dict
    direction: str | None = None
    initial_positions: dict | None = None

    @property
    def max_steps(self) -> int:
        """Episode length limit in control periods."""
        return self.task.max_steps

    @property
    def distractors(self) -> tuple[str, ...]:
        """The scene objects that are not the target."""
        return tuple(n for n in self.placements if n != self.target)

    @property
    def direction_vector(self) -> np.ndarray | None:
        """Unit xy vector of the push direction (None for other tasks)."""
        return None if self.direction is None else np.array(DIRECTIONS[self.direction][0])

    def reset(self, sim) -> None:
        """Reset ``sim`` to this layout (robot at home) and record the start positions."""
        sim.reset(seed=self.seed, placements=self.placements)
        self.initial_positions = {n: p.copy() for n, (p, _) in sim.object_poses().items()}

    def evaluate(self, sim) -> Outcome:
        """Judge the current state with privileged simulator information."""
        if self.initial_positions is None:
            raise RuntimeError('call TaskInstance.reset(sim) before evaluate()')
        return self.task.evaluate(sim, self)

    def success(self, sim) -> bool:
        """Whether the instruction is fulfilled now (named object only, no distractor moved)."""
        return self.evaluate(sim).success

    def info(self) -> dict:
        """JSON-friendly description of the episode."""
        return {'task': self.task.name, 'seed': self.seed, 'split': self.split,
                'target': self.target, 'direction': self.direction,
                'instruction': self.instruction, 'template': self.template,
                'max_steps': self.max_steps,
                'placements': {n: [round(float(v), 4) for v in p]
                               for n, p in self.placements.items()}}


class Task(abc.ABC):
    """A task family: instruction templates, layout sampling and a success check.

    Templates contain ``{object}`` (and ``{direction}`` for push). ``train_templates``
    and ``test_templates`` must not share a template, so train and test instructions
    never coincide.
    """

    name = ''
    max_steps = 100
    train_templates: tuple[str, ...] = ()
    test_templates: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()
    description = ''
    _index = 0  # separates the tasks' random streams for the same seed

    def __init__(self, objects: tuple[str, ...] = tuple(SCENE_OBJECTS)) -> None:
        unknown = [o for o in objects if o not in SCENE_OBJECTS]
        if unknown or not objects:
            raise ValueError(f'targets must be a non-empty subset of {list(SCENE_OBJECTS)}, '
                             f'got {objects!r}')
        if set(self.train_templates) & set(self.test_templates):
            raise ValueError(f'{self.name}: train and test templates overlap')
        self.objects = tuple(objects)

    def templates(self, split: str) -> tuple[str, ...]:
        """Instruction templates of ``split``."""
        return self.train_templates if _check_split(split) == 'train' else self.test_templates

    def _direction_phrase(self, direction: str | None, split: str) -> str:
        if direction is None:
            return ''
        _, train, test = DIRECTIONS[direction]
        return train if split == 'train' else test

    def instructions(self, split: str) -> list[str]:
        """Every instruction string ``split`` can produce (sorted)."""
        out = set()
        for template in self.templates(split):
            for name in self.objects:
                obj = SCENE_OBJECTS[name]
                nouns = (obj.shape,) if split == 'train' else (obj.shape,) + obj.synonyms
                for noun in nouns:
                    for direction in self.directions or (None,):
                        out.add(template.format(
                            object=f'{obj.colour} {noun}',
                            direction=self._direction_phrase(direction, split)))
        return sorted(out)

    def sample(self, seed: int, split: str = 'train') -> TaskInstance:
        """Deterministic episode for ``(seed, split)``: target, layout, instruction."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
        _check_split(split)
        rng = np.random.default_rng([int(seed), self._index, SPLITS.index(split)])
        target = self.objects[int(rng.integers(len(self.objects)))]
        direction = (self.directions[int(rng.integers(len(self.directions)))]
                     if self.directions else None)
        placements = self._layout(rng, target, direction)
        templates = self.templates(split)
        template = templates[int(rng.integers(len(templates)))]
        instruction = template.format(
            object=SCENE_OBJECTS[target].phrase(split, rng),
            direction=self._direction_phrase(direction, split))
        return TaskInstance(self, int(seed), split, target, instruction, template, placements,
                            direction)

    # --------------------------------------------------------------- layouts
    def _target_xy(self, rng, direction) -> np.ndarray:
        return rng.uniform((_WORK_X[0], _WORK_Y[0]), (_WORK_X[1], _WORK_Y[1]))

    def _distractor_ok(self, xy, target_xy, direction) -> bool:
        return True

    def _layout(self, rng, target, direction) -> dict:
        """Place the target in the workspace and the distractors around it."""
        for _ in range(1000):
            target_xy = self._target_xy(rng, direction)
            placed = {target: (*target_xy, rng.uniform(-np.pi, np.pi))}
            for name in SCENE_OBJECTS:
                if name == target:
                    continue
                for _ in range(200):
                    xy = rng.uniform((_SPAWN_X[0], _SPAWN_Y[0]), (_SPAWN_X[1], _SPAWN_Y[1]))
                    if all(math.dist(xy, p[:2]) >= _MIN_GAP for p in placed.values()) \
                            and self._distractor_ok(xy, target_xy, direction):
                        placed[name] = (*xy, rng.uniform(-np.pi, np.pi))
                        break
                else:
                    break  # crowded: start over with a new target position
            if len(placed) == len(SCENE_OBJECTS):
                # Keep the scene's object order so resets are reproducible.
                return {n: tuple(float(v) for v in placed[n]) for n in SCENE_OBJECTS}
        raise RuntimeError(f'{self.name}: could not lay out the scene')  # pragma: no cover

    # ---------------------------------------------------------------- checks
    def _disturbed(self, sim, instance, positions) -> list[str]:
        """Distractors moved more than DISTURB_TOLERANCE from where they started."""
        return [n for n in instance.distractors
                if np.linalg.norm(positions[n] - instance.initial_positions[n])
                > DISTURB_TOLERANCE]

    def evaluate(self, sim, instance: TaskInstance) -> Outcome:
        """Check the target condition and that no distractor was disturbed."""
        positions = {n: p for n, (p, _) in sim.object_poses().items()}
        disturbed = self._disturbed(sim, instance, positions)
        done, wrong, metrics = self._check(sim, instance, positions)
        metrics['disturbed'] = disturbed
        return Outcome(bool(done and not disturbed), bool(wrong or disturbed), metrics)

    def success(self, sim, instance: TaskInstance) -> bool:
        """Whether ``instance`` is solved in the current state of ``sim``."""
        return self.evaluate(sim, instance).success

    @abc.abstractmethod
    def _check(self, sim, instance, positions) -> tuple[bool, bool, dict]:
        """Return (target condition met, wrong object engaged, metrics)."""

    def info(self) -> dict:
        """JSON-friendly description for reports."""
        return {'name': self.name, 'max_steps': self.max_steps, 'objects': list(self.objects),
                'directions': list(self.directions), 'success': self.description,
                'train_templates': list(self.train_templates),
                'test_templates': list(self.test_templates)}


class ReachTask(Task):
    """Bring the fingertips within REACH_TOLERANCE of the named object's surface."""

    name = 'reach'
    max_steps = 60
    _index = 1
    train_templates = ('reach the {object}', 'move the gripper to the {object}')
    test_templates = ('go to the {object}', 'approach the {object}',
                      'bring your hand next to the {object}')
    description = (f'fingertip point within {REACH_TOLERANCE} m of the named object\'s surface; '
                   f'no other object moved more than {DISTURB_TOLERANCE} m')

    def _check(self, sim, instance, positions):
        ee = sim.ee_pose()[0]
        distance = surface_distance(sim, ee, instance.target)
        nearest_other = min(surface_distance(sim, ee, n) for n in instance.distractors)
        wrong = nearest_other <= REACH_TOLERANCE and distance > REACH_TOLERANCE
        return distance <= REACH_TOLERANCE, wrong, {
            'distance': round(distance, 4), 'nearest_distractor': round(nearest_other, 4)}


class PushTask(Task):
    """Push the named object PUSH_DISTANCE in the named direction without lifting it."""

    name = 'push'
    max_steps = 120
    _index = 2
    directions = tuple(DIRECTIONS)
    train_templates = ('push the {object} {direction}', 'shift the {object} {direction}')
    test_templates = ('slide the {object} {direction}', 'nudge the {object} {direction}')
    description = (f'named object moved >= {PUSH_DISTANCE} m along the direction, <= '
                   f'{PUSH_LATERAL_TOLERANCE} m across it, not raised > {PUSH_MAX_RISE} m; '
                   f'no other object moved more than {DISTURB_TOLERANCE} m')

    def _target_xy(self, rng, direction):
        d = np.array(DIRECTIONS[direction][0])
        while True:
            xy = super()._target_xy(rng, direction)
            goal = xy + d * _PUSH_TRAVEL
            if _PUSH_GOAL_X[0] <= goal[0] <= _PUSH_GOAL_X[1] \
                    and _PUSH_GOAL_Y[0] <= goal[1] <= _PUSH_GOAL_Y[1]:
                return xy

    def _distractor_ok(self, xy, target_xy, direction):
        # Distance from xy to the segment the pusher and the target sweep.
        d = np.array(DIRECTIONS[direction][0])
        start, end = target_xy - 0.1 * d, target_xy + (_PUSH_TRAVEL + 0.05) * d
        s = np.clip(np.dot(xy - start, end - start) / np.dot(end - start, end - start), 0, 1)
        return np.linalg.norm(xy - (start + s * (end - start))) >= _CORRIDOR

    def _check(self, sim, instance, positions):
        d = instance.direction_vector
        moved = positions[instance.target] - instance.initial_positions[instance.target]
        along = float(moved[:2] @ d)
        lateral = abs(float(moved[0] * d[1] - moved[1] * d[0]))
        rise = float(moved[2])
        done = along >= PUSH_DISTANCE and lateral <= PUSH_LATERAL_TOLERANCE \
            and rise <= PUSH_MAX_RISE
        return done, False, {'along': round(along, 4), 'lateral': round(lateral, 4),
                             'rise': round(rise, 4)}


class PickUpTask(Task):
    """Lift the named object LIFT_HEIGHT off the table, held between both fingers."""

    name = 'pick_up'
    max_steps = 100
    _index = 3
    train_templates = ('pick up the {object}', 'grasp the {object} and raise it')
    test_templates = ('grab the {object}', 'lift the {object}',
                      'take the {object} off the table')
    description = (f'named object raised >= {LIFT_HEIGHT} m and touching both fingers; no '
                   f'other object moved more than {DISTURB_TOLERANCE} m')

    def _check(self, sim, instance, positions):
        target = instance.target
        rise = float(positions[target][2] - instance.initial_positions[target][2])
        held = set(FINGER_GEOMS) <= sim.contacts(instance.target)
        return rise >= LIFT_HEIGHT and held, False, {'rise': round(rise, 4), 'held': held}


TASKS = {cls.name: cls for cls in (ReachTask, PushTask, PickUpTask)}


def task_names() -> tuple[str, ...]:
    """Names of the task families."""
    return tuple(TASKS)


def get_task(name: str) -> Task:
    """Build the task family ``name`` ('reach', 'push', 'pick_up') over all objects."""
    if name not in TASKS:
        raise ValueError(f'unknown task {name!r}; choose from {list(TASKS)}')
    return TASKS[name]()
