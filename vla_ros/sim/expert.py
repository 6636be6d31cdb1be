"""Scripted expert: solves the sim tasks from privileged simulator state.

The expert is a :class:`~vla_ros.policies.contract.Policy` that outputs ``arm7`` actions
(end-effector displacement per control period in the arm-base frame, rotation vector per
period, gripper 0 closed .. 1 open), so the same rollout code, chunk buffer and command
conversion run it and the learned policies. Unlike them it ignores the images: before an
episode the rollout hands it the simulator and the task instance through
:meth:`ScriptedExpert.attach_simulator`, and every chunk is planned from the true poses.

One state machine per task:

- reach: travel above the object at a safe height, then descend to just above it.
- push: close the fingers and turn them across the push direction (the widest pusher the
  hand offers without a gap the object could wedge into), go behind the object at a safe
  height, descend, then push along the line from the object to its goal, re-aiming as it
  drifts and lining up again if it slips sideways.
- pick_up: travel above the object (optionally turning the fingers to a cube's faces),
  descend, close, wait for the grip, lift; if the object slips out, open and try again.
  Once lifted it holds: fingers closed, zero twist, until the episode ends (episodes that
  run on after success teach a policy what to do then; see ``rollout(until_horizon)``).

With ``chunk_length > 1`` the expert plans open loop: it rolls its state machine forward on
a kinematic model (the hand moves exactly as commanded, a held object moves with the
hand, a pushed object stays in front of the pusher). That makes it a chunking policy whose
chunks go stale, which is what the chunk strategies are compared on. Phase changes are
kept only when the real state triggers them, never from a plan's imagined future. With
``latency_compensation`` the plan also accounts for its own inference delay (see
:class:`ScriptedExpert`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from vla_ros.actions.spaces import load_action_space
from vla_ros.policies.contract import Observation, Policy, PolicySpec
from vla_ros.sim.kinematics import quat_to_rotation
from vla_ros.sim.tasks import FINGER_GEOMS, TaskInstance

__all__ = ['ScriptedExpert', 'ExpertConfig']

_SAFE_Z = 0.11          # travel height of the fingertips above the table
_FINGER_HALF_X = 0.012  # a finger's half thickness along the hand x axis
_PUSH_GRIPPER = 0.0     # fingers closed while pushing (a half-open gap lets objects wedge in)
_CLOSE_TIME = 0.5       # seconds to let the fingers close before lifting
_LIFT_Z = 0.14          # lift the grasp point this far
_PUSH_Z = 0.022         # fingertip height while pushing (keeps the palm above objects)
_GAIN = 0.6             # fraction of the remaining error commanded per period
_SLOW_ZONE = 0.05       # within this distance of the goal fine_step applies ...
_LOW_Z = 0.07           # ... and below this height (the tallest object is 0.06 m)


@dataclass(frozen=True)
class ExpertConfig:
    """Speeds (per control period) and tolerances of the state machines."""

    max_step: float = 0.03        # m per period while travelling (arm7 allows 0.05)
    fine_step: float = 0.015      # m per period near the object
    push_step: float = 0.012      # m per period while pushing
    max_turn: float = 0.2         # rad per period (arm7 allows 0.25)
    # reach: start down to the object once the hand is this close horizontally. Success
    # needs the fingertips within 3 cm of the surface, so 3 cm off-centre over a 4-5 cm
    # object still ends inside it; a tighter gate (it was 1.5 cm) taught learned policies
    # to hover at travel height until they were more precise than they can see.
    reach_tolerance: float = 0.03
    # pick_up: start down once this close horizontally and turned to within this many
    # radians of the grasp yaw (the open fingers leave 8 cm for a 4-5 cm object). The
    # gates were 0.8 cm and 0.05 rad: tighter than a 64 px camera lets a policy see.
    grasp_tolerance: float = 0.012
    grasp_yaw_tolerance: float = 0.1
    # pick_up: turn the fingers to a cube's faces before descending. Off by default: the
    # open fingers leave 8 cm and the cubes' diagonals are 7.1 and 5.7 cm, so a cube at
    # any yaw fits between them and closing squares it up (40/40 lifted at the hand's
    # own yaw, 40/40 face-aligned, seeds 0..; 39/40 vs 40/40 with the grasp 1 cm off
    # centre). A learned policy then need not read a cube's yaw off a 64 px image,
    # which it could not: the face-aligned label flips sign at 45 degrees.
    align_cube_faces: bool = False
    # pick_up: close the fingers once the hand is this close (3-D) to the grasp point.
    close_tolerance: float = 0.006
    push_travel: float = 0.12     # aim this far past the start (success needs 0.08)
    max_retries: int = 2
    # pick_up: once the object is held within this distance (m) of the lift goal, stop
    # moving (zero twist, fingers closed). Chasing the last millimetres with small steps
    # would make a policy learn a never-ending drift instead of a still hold.
    hold_tolerance: float = 0.01

    def __post_init__(self):
        for name in ('max_step', 'fine_step', 'push_step'):
            value = getattr(self, name)
            if not 0.0 < value <= 0.05:
                raise ValueError(f'{name} must be in (0, 0.05] m per period, got {value}')
        for name in ('reach_tolerance', 'grasp_tolerance', 'close_tolerance',
                     'hold_tolerance'):
            if not 0.0 < getattr(self, name) <= 0.05:
                raise ValueError(f'{name} must be in (0, 0.05] m, got {getattr(self, name)}')
        if not 0.0 < self.grasp_yaw_tolerance <= 0.5:
            raise ValueError(f'grasp_yaw_tolerance must be in (0, 0.5] rad, got '
                             f'{self.grasp_yaw_tolerance}')
        if not 0.0 < self.max_turn <= 0.25:
            raise ValueError(f'max_turn must be in (0, 0.25] rad per period, got {self.max_turn}')


@dataclass
class _Belief:
    """What a plan step needs to know: the hand, the target object and the clock."""

    ee: np.ndarray        # fingertip point (m)
    rot: np.ndarray       # hand rotation matrix
    obj: np.ndarray       # target centre (m)
    obj_yaw: float
    held: bool            # target touches both fingers
    time: float


@dataclass
class _Memory:
    """The state machine's phase and what it remembers across steps."""

    phase: str = 'travel'
    since: float = 0.0    # time the phase started
    anchor: np.ndarray | None = None  # where the grasp closed (pick_up)
    retries: int = 0


def _yaw(rot: np.ndarray) -> float:
    return math.atan2(rot[1, 0], rot[0, 0])


def _rotz(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotvec(rot: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle) of a rotation matrix."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:  # angle ~ pi: pick the axis from the diagonal
        axis = np.sqrt(np.maximum((np.diag(rot) + 1.0) / 2.0, 0.0))
        norm = np.linalg.norm(axis)
    return axis / norm * angle


def _from_rotvec(v: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = v / angle
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _nearest(angle: float, period: float, current: float) -> float:
    """The angle equivalent to ``angle`` modulo ``period`` that is closest to ``current``.

    Symmetric targets (a cube every quarter turn, the two-finger hand every half turn)
    then never make the hand flip between two equally good yaws.
    """
    return current + (angle - current + period / 2) % period - period / 2


def _angle_diff(a: float, b: float) -> float:
    return (a - b + math.pi) % (2 * math.pi) - math.pi


class ScriptedExpert(Policy):
    """Privileged-state expert for the reach / push / pick_up tasks (arm7 actions)."""

    # The rollout may hand it blank frames instead of rendering: it never looks at them.
    needs_images = False

    def __init__(self, chunk_length: int = 1, control_period: float = 0.1,
                 image_size: tuple[int, int] = (64, 64), camera_names=('front',),
                 name: str = 'expert', latency_compensation: float = 0.0,
                 **config) -> None:
        """``latency_compensation`` (s): expected inference delay the plan accounts for.

        With ``d = ceil(latency_compensation / control_period)`` the first ``d`` rows of a
        chunk repeat the previous chunk's rows for the same ticks (what the robot will be
        doing while this chunk is computed, as real-time chunking assumes) and the plan
        starts from where they lead. 0 plans from the observed state.
        """
        self._spec = PolicySpec(name=name, action_space=load_action_space('arm7'),
                                chunk_length=chunk_length, camera_names=tuple(camera_names),
                                image_size=image_size, control_period=control_period)
        if not (math.isfinite(latency_compensation) and latency_compensation >= 0):
            raise ValueError(f'latency_compensation must be >= 0 s, got {latency_compensation}')
        self._delay_steps = math.ceil(latency_compensation / control_period - 1e-9)
        self.config = ExpertConfig(**config)
        self._last_chunk: tuple[float, np.ndarray] | None = None
        self._space = self._spec.action_space
        self._sim = None
        self._instance: TaskInstance | None = None
        self._memory = _Memory()
        self._shape: tuple[str, np.ndarray] | None = None

    @property
    def spec(self) -> PolicySpec:
        """arm7 chunks of ``chunk_length``; one camera declared, but images are unused."""
        return self._spec

    def attach_simulator(self, sim, instance: TaskInstance) -> None:
        """Give the expert privileged access to ``sim`` for the episode ``instance``."""
        if instance.task.name not in ('reach', 'push', 'pick_up'):
            raise ValueError(f'the expert cannot solve task {instance.task.name!r}')
        self._sim, self._instance = sim, instance
        self._shape = sim.object_shape(instance.target)
        self.reset()

    def reset(self) -> None:
        """Start the state machine from its first phase, with no previous chunk."""
        self._memory = _Memory()
        self._last_chunk = None

    # ------------------------------------------------------------------ policy
    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """Plan ``chunk_length`` actions from the simulator's current (true) state."""
        self.validate_observation(observation)
        if self._sim is None:
            raise RuntimeError('ScriptedExpert needs attach_simulator(sim, instance) first')
        belief = self._read_state()
        # Phase changes triggered by the real state are kept ...
        action, self._memory = self._step(belief, self._memory)
        # ... those of the imagined future are not.
        memory = replace(self._memory)
        rows = self._committed(float(observation.stamp))
        for row in rows:
            belief = self._imagine(belief, row, memory)
            _, memory = self._step(belief, memory)
        if not rows:
            rows = [action]
        while len(rows) < self._spec.chunk_length:
            belief = self._imagine(belief, rows[-1], memory)
            action, memory = self._step(belief, memory)
            rows.append(action)
        chunk = self.check_chunk(np.array(rows, dtype=np.float32))
        self._last_chunk = (float(observation.stamp), chunk)
        return chunk

    def _committed(self, stamp: float) -> list[np.ndarray]:
        """Rows of the previous chunk for the ticks the inference delay will cover."""
        if not self._delay_steps or self._last_chunk is None:
            return []
        last_stamp, last = self._last_chunk
        period = self._spec.control_period
        rows = []
        for i in range(min(self._delay_steps, self._spec.chunk_length - 1)):
            j = round((stamp + i * period - last_stamp) / period)
            if not 0 <= j < len(last):
                break
            rows.append(last[j].astype(float))
        return rows

    # ------------------------------------------------------------------ state
    def _read_state(self) -> _Belief:
        sim, target = self._sim, self._instance.target
        ee, quat = sim.ee_pose()
        pos, oquat = sim.object_poses()[target]
        held = set(FINGER_GEOMS) <= sim.contacts(target)
        return _Belief(ee.copy(), quat_to_rotation(quat), pos.copy(),
                       _yaw(quat_to_rotation(oquat)), held, sim.time)

    def _imagine(self, b: _Belief, action: np.ndarray, memory: _Memory) -> _Belief:
        """The kinematic model a chunk is planned on."""
        move = action[:3].astype(float)
        ee = b.ee + move
        rot = _from_rotvec(action[3:6].astype(float)) @ b.rot
        obj = b.obj.copy()
        if memory.phase == 'lift' and b.held:
            obj = obj + move
        elif self._instance.task.name == 'push' and ee[2] < obj[2] + self._half_height():
            # Fingers at object height shove it ahead of them (whatever the phase says:
            # an executed chunk may be ahead of the phase the real state shows).
            u = self._push_direction(b)
            rel = obj[:2] - ee[:2]
            gap = float(rel @ u)
            across = float(np.linalg.norm(rel - gap * u))
            contact = self._contact_offset(b, u)
            if gap < contact and gap > -contact and across < self._radius():
                obj[:2] += u * (contact - gap)
        return _Belief(ee, rot, obj, b.obj_yaw, b.held, b.time + self._spec.control_period)

    # -------------------------------------------------------------- geometry
    def _radius(self) -> float:
        """The target's half width in the horizontal plane (largest for a box)."""
        kind, size = self._shape
        return float(math.hypot(size[0], size[1])) if kind == 'box' else float(size[0])

    def _half_height(self) -> float:
        kind, size = self._shape
        return float(size[2] if kind == 'box' else size[1] if kind == 'cylinder' else size[0])

    def _push_direction(self, b: _Belief) -> np.ndarray:
        """Unit xy vector from the object to its goal (the named direction at first)."""
        inst = self._instance
        d = inst.direction_vector
        goal = inst.initial_positions[inst.target][:2] + d * self.config.push_travel
        g = goal - b.obj[:2]
        # Re-aim at the goal, but never by more than 45 degrees off the named direction.
        if np.linalg.norm(g) < 1e-6 or g @ d <= 0:
            return d
        u = g / np.linalg.norm(g)
        return u if u @ d >= math.cos(math.pi / 4) else d

    def _contact_offset(self, b: _Belief, u: np.ndarray) -> float:
        """Centre distance along ``u`` between the closed fingers and the object in contact."""
        kind, size = self._shape
        if kind == 'box':  # a turned cube reaches further along u
            rel = b.obj_yaw - math.atan2(u[1], u[0])
            return float(size[0]) * (abs(math.cos(rel)) + abs(math.sin(rel))) + _FINGER_HALF_X
        return float(size[0]) + _FINGER_HALF_X

    @staticmethod
    def _push_yaw(u: np.ndarray, current: float) -> float:
        """Hand yaw that lines the fingers up across ``u`` (the hand is symmetric: mod pi)."""
        return _nearest(math.atan2(u[1], u[0]), math.pi, current)

    def _push_remaining(self, b: _Belief) -> float:
        inst = self._instance
        start = inst.initial_positions[inst.target][:2]
        return self.config.push_travel - float((b.obj[:2] - start) @ inst.direction_vector)

    # ------------------------------------------------------------ controller
    def _move(self, b: _Belief, target: np.ndarray, yaw: float, gripper: float,
              step: float) -> np.ndarray:
        """One arm7 action towards ``target`` with the hand down at ``yaw``."""
        # A gain below 1: the arm lags its commands by a few mm, and commanding the whole
        # measured error again every period would overshoot (into the table).
        target = np.asarray(target, float)
        delta = _GAIN * (target - b.ee)
        dist = np.linalg.norm(delta)
        if dist < _GAIN * _SLOW_ZONE or min(target[2], b.ee[2]) < _LOW_Z:
            # Slow near the goal and among the objects: the arm lags its commands by
            # about 30 ms, so a fast approach would overshoot into the table or an object.
            step = min(step, self.config.fine_step)
        if dist > step:
            delta *= step / dist
        turn = _GAIN * _rotvec(_rotz(yaw) @ b.rot.T)
        angle = np.linalg.norm(turn)
        if angle > self.config.max_turn:
            turn *= self.config.max_turn / angle
        action = np.concatenate([delta, turn, [gripper]])
        return self._space.clip(action)

    def _step(self, b: _Belief, memory: _Memory) -> tuple[np.ndarray, _Memory]:
        task = self._instance.task.name
        return getattr(self, f'_step_{task}')(b, replace(memory))

    @staticmethod
    def _enter(memory: _Memory, phase: str, now: float) -> None:
        memory.phase, memory.since = phase, now

    @staticmethod
    def _lined_up(b: _Belief, m: _Memory, xy: np.ndarray, tolerance: float,
                  aligned: bool = True) -> bool:
        """Travel/descend switch with hysteresis on the horizontal error to ``xy``.

        Descend once within ``tolerance`` (a looser one when the hand is already low, as
        it is when an open-loop chunk went ahead of the real phase); go back to travel
        only when the error grows well past it.
        """
        error = float(np.linalg.norm(b.ee[:2] - xy))
        low = b.ee[2] < _SAFE_Z - 0.02
        if m.phase == 'travel':
            ok = aligned and error < (2.5 * tolerance if low else tolerance)
            if ok:
                ScriptedExpert._enter(m, 'descend', b.time)
            return ok
        if m.phase == 'descend' and error > max(0.03, 3 * tolerance):
            ScriptedExpert._enter(m, 'travel', b.time)
            return False
        return m.phase != 'travel'

    def _step_reach(self, b, m):
        top = b.obj[2] + self._half_height()
        above = np.array([b.obj[0], b.obj[1], max(_SAFE_Z, top + 0.04)])
        self._lined_up(b, m, above[:2], self.config.reach_tolerance)
        if m.phase == 'travel':
            # Rise to the safe height before crossing over the other objects.
            target = above if b.ee[2] >= _SAFE_Z - 0.02 else np.r_[b.ee[:2], above[2]]
            return self._move(b, target, 0.0, 1.0, self.config.max_step), m
        hover = np.array([b.obj[0], b.obj[1], top + 0.012])
        return self._move(b, hover, 0.0, 1.0, self.config.fine_step), m

    def _step_push(self, b, m):
        d = self._instance.direction_vector
        grip = _PUSH_GRIPPER
        u = self._push_direction(b)
        yaw = self._push_yaw(u, _yaw(b.rot))
        contact = self._contact_offset(b, u)
        behind = b.obj[:2] - u * contact
        offset = b.ee[:2] - behind
        lateral = float(np.linalg.norm(offset - (offset @ u) * u))
        in_line = lateral <= 0.6 * self._radius() and -0.05 <= offset @ u <= 0.03
        if m.phase in ('travel', 'descend'):
            start = b.obj[:2] - u * (contact + 0.03)
            if b.ee[2] < b.obj[2] + 0.012 and in_line:
                # Fingers at object height, lined up behind it (however they got there).
                self._enter(m, 'push', b.time)
            elif m.phase == 'descend' and in_line:
                # Lined up already (maybe nearer than ``start``): just go down.
                return self._move(b, np.r_[b.ee[:2], _PUSH_Z], yaw, grip,
                                  self.config.max_step), m
            else:
                self._lined_up(b, m, start, 0.01, abs(_angle_diff(_yaw(b.rot), yaw)) < 0.1)
            if m.phase == 'travel':
                target = np.r_[start, _SAFE_Z] if b.ee[2] >= _SAFE_Z - 0.02 \
                    else np.r_[b.ee[:2], _SAFE_Z]
                return self._move(b, target, yaw, grip, self.config.max_step), m
            if m.phase == 'descend':
                return self._move(b, np.r_[start, _PUSH_Z], yaw, grip, self.config.max_step), m
        if m.phase == 'push':
            if self._push_remaining(b) <= 0.005:
                self._enter(m, 'done', b.time)
            else:
                if not in_line:
                    # Lost the object (it slid sideways): back off and line up again.
                    self._enter(m, 'travel', b.time)
                    return self._move(b, np.r_[b.ee[:2] - 0.02 * d, _SAFE_Z], yaw, grip,
                                      self.config.max_step), m
                # Aim well past the contact so the commanded step stays at push_step even
                # where ``contact`` (an estimate for turned cubes) is off by a centimetre.
                target = np.r_[behind + u * 0.05, _PUSH_Z]
                return self._move(b, target, yaw, grip, self.config.push_step), m
        return self._move(b, b.ee, _yaw(b.rot), grip, self.config.push_step), m  # done: hold

    def _grasp_yaw(self, b: _Belief) -> float:
        kind, _ = self._shape
        current = _yaw(b.rot)
        if kind == 'box' and self.config.align_cube_faces:
            return _nearest(b.obj_yaw, math.pi / 2, current)
        return current

    def _step_pick_up(self, b, m):
        yaw = self._grasp_yaw(b)
        grasp_z = max(b.obj[2] - 0.005, 0.012)
        above = np.array([b.obj[0], b.obj[1], max(_SAFE_Z, b.obj[2] + self._half_height()
                                                   + 0.06)])
        if m.phase in ('travel', 'descend'):
            aligned = abs(_angle_diff(_yaw(b.rot), yaw)) < self.config.grasp_yaw_tolerance
            if not self._lined_up(b, m, above[:2], self.config.grasp_tolerance, aligned):
                target = above if b.ee[2] >= _SAFE_Z - 0.02 else np.r_[b.ee[:2], above[2]]
                return self._move(b, target, yaw, 1.0, self.config.max_step), m
        if m.phase == 'descend':
            grasp = np.array([b.obj[0], b.obj[1], grasp_z])
            if np.linalg.norm(b.ee - grasp) < self.config.close_tolerance:
                self._enter(m, 'close', b.time)
                m.anchor = grasp
            else:
                return self._move(b, grasp, yaw, 1.0, self.config.fine_step), m
        if m.phase == 'close':
            if b.time - m.since >= _CLOSE_TIME - 1e-9:
                self._enter(m, 'lift', b.time)
            else:
                return self._move(b, m.anchor, _yaw(b.rot), 0.0, self.config.fine_step), m
        # lift
        slipped = not b.held and b.ee[2] - b.obj[2] > 0.03
        if slipped and m.retries < self.config.max_retries:
            m.retries += 1
            self._enter(m, 'travel', b.time)
            return self._move(b, np.r_[b.ee[:2], _SAFE_Z], _yaw(b.rot), 1.0,
                              self.config.fine_step), m
        target = m.anchor + np.array([0.0, 0.0, _LIFT_Z])
        if m.phase == 'hold' or (b.held and np.linalg.norm(target - b.ee)
                                 < self.config.hold_tolerance):
            if m.phase != 'hold':
                self._enter(m, 'hold', b.time)
            if b.held:
                return self._hold(), m
            self._enter(m, 'lift', b.time)  # it slipped out: the retry logic above next
        return self._move(b, target, _yaw(b.rot), 0.0, self.config.fine_step), m

    def _hold(self) -> np.ndarray:
        """Zero twist with the fingers closed: keep what is lifted where it is."""
        action = np.zeros(self._space.dim)
        action[self._space.index('gripper')] = 0.0
        return action
