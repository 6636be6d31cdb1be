"""Lock-step regression: replay a recorded session through the inference engine.

Nothing here reads a wall clock, so the result is a pure function of the bag, the
parameters and the code, reproducible on a loaded machine.

Recorded schedule (the bag has ``vla/action_chunk``): each recorded chunk says which camera
frame it was computed from (its stamp) and when it became available (its bag time minus
the median transport delay measured on the command topic). The current policy is run on
that frame and its chunk is added to the engine's buffer at that time; then every recorded
control tick (the stamps of ``cmd/ee_twist``, or of ``cmd/joint`` on a joint-space robot)
gets ``command_at`` + ``shape_command``, exactly what the node publishes. Joint commands
are compared joint by joint, by name (:class:`CommandLayout`). Outputs then differ only
if the policy, its configuration or the code changed.

Engine schedule (no chunks in the bag, e.g. teleoperation): the engine decides when to
infer (``inference_due``) and each inference takes a fixed virtual latency.

Parameters are those of the recording (stored by the recorder), overridden by a shipped
configuration, parameter files and single overrides, in that order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from vla_ros import parameters
from vla_ros.bags.reader import BagReader
from vla_ros.bags.session import Session, load_session
from vla_ros.inference_config import (
    command_limits,
    engine_config,
    parse_policy_params,
    policy_arguments,
)
from vla_ros.runtime.commands import shape_command
from vla_ros.runtime.engine import Frame, InferenceEngine
from vla_ros.runtime.joint_commands import joint_config_from_params
from vla_ros.runtime.lockstep import LockstepInference
from vla_ros.runtime.proprio import ProprioLayout

NODE_NAME = 'vla_inference'
EE_DIMS = ('vx', 'vy', 'vz', 'wx', 'wy', 'wz')
BASE_DIMS = ('base_vx', 'base_vy', 'base_wz')
DIMENSIONS = EE_DIMS + ('gripper',) + BASE_DIMS
DEFAULT_TOLERANCE = 1e-6


class RegressionError(ValueError):
    """The bag or the configuration does not allow a regression run."""


@dataclass(frozen=True)
class CommandLayout:
    """The compared dimensions of a control tick: twist or joints, then gripper and base.

    ``joint_names`` empty: an end-effector twist robot (:data:`DIMENSIONS`). Otherwise
    each configured joint is a dimension named after it, holding the position target
    (``joint_position``) or the velocity (``joint_velocity``) the node published.
    """

    joint_names: tuple[str, ...] = ()
    interface: str = 'ee_twist'

    @classmethod
    def from_params(cls, params: dict) -> CommandLayout:
        """The layout the node with these parameters publishes."""
        try:
            joints = joint_config_from_params(params)
        except ValueError as exc:
            raise RegressionError(f'joint parameters: {exc}') from exc
        if joints is None:
            return cls()
        return cls(tuple(joints.joint_names), joints.interface)

    @property
    def names(self) -> tuple[str, ...]:
        """Dimension names, in row order."""
        return (self.joint_names or EE_DIMS) + ('gripper',) + BASE_DIMS

    @property
    def command_topic(self) -> str:
        """The topic the node publishes its ticks on."""
        return 'cmd/joint' if self.joint_names else 'cmd/ee_twist'

    def row(self, ee=None, gripper=None, base=None, joint_names=(), positions=None,
            velocities=None) -> np.ndarray:
        """One tick as a row; NaN where nothing was published."""
        row = np.full(len(self.names), np.nan)
        n = len(self.joint_names) or len(EE_DIMS)
        if not self.joint_names:
            if ee is not None:
                row[:n] = ee
        elif joint_names:
            if tuple(joint_names) != self.joint_names:
                raise RegressionError(f'cmd/joint names {list(joint_names)} are not the '
                                      f'configured joint_names {list(self.joint_names)}')
            values = positions if self.interface == 'joint_position' else velocities
            if values is not None:
                row[:n] = values
        if gripper is not None:
            row[n] = gripper
        if base is not None:
            row[n + 1:] = base
        return row


# ------------------------------------------------------------------ parameters
def default_parameters() -> dict:
    """The inference node's declared parameter defaults (from the parameter schema)."""
    return parameters.defaults(parameters.INFERENCE)


def parameters_from_file(path: str | Path, node_name: str = NODE_NAME) -> dict:
    """``ros__parameters`` of the node in a ROS 2 parameter file (``/**``, wildcards)."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RegressionError(f'cannot read parameter file {path}: {exc}') from None
    out = {}
    for key, section in doc.items():
        last = str(key).rstrip('/').split('/')[-1]
        if last in (node_name, '**') and isinstance(section, dict):
            out.update(section.get('ros__parameters') or {})
    return out


def parse_assignment(text: str) -> tuple[str, object]:
    """``name:=value``, converted to the inference parameter's declared type (as at launch)."""
    if ':=' not in text:
        raise RegressionError(f'expected name:=value, got {text!r}')
    name, value = text.split(':=', 1)
    name = name.strip()
    try:
        return name, parameters.convert(parameters.spec(parameters.INFERENCE, name), value)
    except ValueError as exc:
        raise RegressionError(str(exc)) from None


def resolve_parameters(recorded: dict, configuration: str | None = None,
                       params_files=(), overrides: dict | None = None,
                       policy: str | None = None, policy_params: dict | None = None) -> dict:
    """Defaults <- recorded <- configuration files <- params files <- overrides."""
    params = default_parameters()
    params.update({k: v for k, v in recorded.items() if k in params})
    if configuration:
        from vla_ros import bringup

        spec = next(s for s in bringup.nodes(configuration, {}) if s.name == NODE_NAME)
        for path in spec.param_files:
            params.update(parameters_from_file(path))
        params.update(spec.parameters)
        for path in spec.final_param_files:
            params.update(parameters_from_file(path))
    for path in params_files:
        params.update(parameters_from_file(path))
    unknown = sorted(set(overrides or {}) - set(params))
    if unknown:
        raise RegressionError(f'unknown inference parameter(s) {unknown}')
    params.update(overrides or {})
    if policy:
        params['policy'] = policy
    if policy_params:
        merged = parse_policy_params(params['policy_params'])
        merged.update(policy_params)
        params['policy_params'] = json.dumps(merged)
    return params


def _instruction_problem(text: str) -> str:
    """The node's own instruction check (so rejected instructions are rejected here too)."""
    from vla_ros.nodes import inference_node

    check = getattr(inference_node, 'instruction_problem', None)
    if check is not None:
        return check(text)
    if not text.strip():
        return 'empty instruction'
    return f'instruction too long ({len(text)} > 2000 characters)' if len(text) > 2000 else ''


# ------------------------------------------------------------------ tolerances
def parse_tolerance(text: str | None, layout: CommandLayout = CommandLayout()
                    ) -> dict[str, float]:
    """'0.001' (all), 'vx=0.01,gripper=0.1' (joints: 'joint1=0.01' or 'joints=0.01').

    Default 1e-6 for every dimension of ``layout``.
    """
    names = layout.names
    groups = {'linear': EE_DIMS[:3], 'angular': EE_DIMS[3:], 'base': BASE_DIMS}
    if layout.joint_names:
        groups = {'joints': layout.joint_names, 'base': BASE_DIMS}
    out = {dim: DEFAULT_TOLERANCE for dim in names}
    if not text:
        return out
    for part in str(text).split(','):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.rpartition('=')
        try:
            number = float(value)
        except ValueError:
            raise RegressionError(f'tolerance {part!r}: {value!r} is not a number') from None
        if not number >= 0:
            raise RegressionError(f'tolerance {part!r} must be >= 0')
        if not name:
            out = dict.fromkeys(out, number)
        elif name in groups:
            out.update(dict.fromkeys(groups[name], number))
        elif name in out:
            out[name] = number
        else:
            raise RegressionError(f'tolerance for unknown dimension {name!r}; known: '
                                  f'{", ".join(names)} (or {", ".join(groups)})')
    return out


# ---------------------------------------------------------------------- result
@dataclass
class DimensionResult:
    """Recorded vs replayed for one command dimension."""

    name: str
    tolerance: float
    max_abs_error: float
    rmse: float
    exceed: int
    first_exceed_time: float | None
    presence_mismatch: int

    @property
    def passed(self) -> bool:
        """Within tolerance everywhere and published on the same ticks."""
        return self.exceed == 0 and self.presence_mismatch == 0


@dataclass
class RegressionResult:
    """Everything a regression run found (also written as report.json)."""

    bag: str
    schedule: str
    policy: str
    ticks: int
    chunks_replayed: int
    dimensions: list[DimensionResult]
    times: np.ndarray
    recorded: np.ndarray   # (ticks, len(dimension_names)), NaN where not published
    replayed: np.ndarray
    notes: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    dimension_names: tuple[str, ...] = DIMENSIONS

    @property
    def passed(self) -> bool:
        """True when every dimension passed."""
        return self.ticks > 0 and all(d.passed for d in self.dimensions)

    def to_json(self) -> dict:
        """A JSON-ready summary (per-tick arrays included for plotting elsewhere)."""
        def clean(a):
            return [[None if math.isnan(v) else v for v in row] for row in a.tolist()]

        return {
            'bag': self.bag, 'passed': self.passed, 'schedule': self.schedule,
            'policy': self.policy, 'ticks': self.ticks,
            'chunks_replayed': self.chunks_replayed,
            'dimensions': [{**d.__dict__, 'passed': d.passed} for d in self.dimensions],
            'notes': self.notes, 'parameters': self.parameters,
            'series': {'dimensions': list(self.dimension_names), 'time_s': self.times.tolist(),
                       'recorded': clean(self.recorded), 'replayed': clean(self.replayed)},
        }


def compare(times, recorded, replayed, tolerance, names=DIMENSIONS) -> list[DimensionResult]:
    """Per-dimension errors; a value published on one side only is a presence mismatch."""
    out = []
    for j, name in enumerate(names):
        rec, rep = recorded[:, j], replayed[:, j]
        both = ~np.isnan(rec) & ~np.isnan(rep)
        mismatch = int(np.sum(np.isnan(rec) != np.isnan(rep)))
        if not both.any() and mismatch == 0:
            continue  # dimension not used by this robot
        err = np.abs(rec[both] - rep[both])
        over = np.flatnonzero(both)[err > tolerance[name]]
        out.append(DimensionResult(
            name, tolerance[name], float(err.max()) if err.size else 0.0,
            float(np.sqrt(np.mean(err ** 2))) if err.size else 0.0, int(over.size),
            float(times[over[0]]) if over.size else None, mismatch))
    return out


# ---------------------------------------------------------------------- replay
def recorded_decision_lead(recorded: dict) -> float:
    """How long before its stamp the recorded node computed each command [s].

    Only a recording that says it ran a control process (``control_process`` with the
    control thread, not simulated time) has a lead; older bags have none.
    """
    if recorded.get('control_process') is True and recorded.get('control_thread', True) \
            and not recorded.get('use_sim_time', False):
        return float(recorded.get('control_process_lead_s', 0.0))
    return 0.0


def _order_after_command(recv: float, after: float, stamps: np.ndarray,
                         decided: np.ndarray) -> tuple[float, int, np.ndarray]:
    """Where a chunk buffered after the command stamped ``after`` goes among the ticks.

    Returns (sort key, priority, indices of the ticks after it). The key is the chunk's
    receive time moved, if needed, to just after that command's tick (priority 5, after a
    tick's 4) or to just before the next tick (priority 3).
    """
    eps = 1e-6  # stamps travel as integer nanoseconds
    following = np.flatnonzero(stamps > after + eps)
    before = np.flatnonzero(stamps <= after + eps)
    key, priority = recv, 3
    if following.size and key >= decided[following[0]]:
        key = decided[following[0]]
    if before.size and key <= decided[before[-1]]:
        key, priority = decided[before[-1]], 5
    return key, priority, following


class LockstepReplay:
    """Drive an InferenceEngine through a recorded session on the recorded clock."""

    def __init__(self, session: Session, params: dict, policy=None,
                 virtual_latency: float = 0.1):
        """Build engine, limits and policy from ``params`` (as the node does)."""
        from vla_ros.policies.registry import make_policy

        # With a control process the node decided each tick this long before its stamp
        # (the deadline the process published it at); recorded bags say so.
        self.decision_lead = recorded_decision_lead(session.parameters)

        if virtual_latency < 0:
            raise RegressionError('virtual latency must be >= 0')
        self.session = session
        self.params = params
        self.engine = InferenceEngine(engine_config(params),
                                      joints=joint_config_from_params(params))
        self.limits = command_limits(params)
        name, config = policy_arguments(params)
        if policy is None:
            try:
                policy = make_policy(name, **config)
            except Exception as exc:  # noqa: BLE001 - report any load failure clearly
                raise RegressionError(f'cannot load policy {name!r}: '
                                      f'{type(exc).__name__}: {exc}') from exc
        self.policy_name = name
        self.engine.begin_policy_load(name)
        refused = self.engine.finish_policy_load(name, policy)
        if refused:
            raise RegressionError(f'policy {name!r} does not fit the recorded robot: {refused}')
        self.virtual_latency = virtual_latency
        self.notes: list[str] = []
        self.chunks_replayed = 0
        self.layout = CommandLayout.from_params(params)
        self._use_proprio = bool(params.get('use_joint_states'))
        self._proprio_layout = ProprioLayout(
            tuple(j for j in params.get('proprio_joints') or () if j),
            tuple(j for j in params.get('gripper_joints') or () if j),
            float(params.get('gripper_open_position', 0.04)))
        self._primary = policy.spec.camera_names[0]
        self._cameras = policy.spec.camera_names

    # -------------------------------------------------------------- timeline
    def _input_events(self) -> list[tuple]:
        events = []
        for recv, text in self.session.instructions:
            events.append((recv, 0, 'instruction', text))
        for camera, frames in self.session.images.items():
            for frame in frames:
                events.append((frame.recv, 1, 'image', (camera, frame)))
        if self._use_proprio or self.layout.joint_names:
            for joints in self.session.joint_states:
                events.append((joints.recv, 2, 'joints', joints))
            ticks, states = self.session.ticks, self.session.joint_states
            if self.layout.joint_names and ticks and states and states[0].recv > ticks[0].recv:
                # The node measured the arm before the bag began (a hold at the start
                # commands those positions); the first recorded joint_states stands in.
                events.append((ticks[0].recv, 2, 'joints', states[0]))
                self.notes.append(f'joint_states before the recording are unknown; the first '
                                  f'recorded one ({states[0].recv - ticks[0].recv:.3f} s '
                                  f'after the first tick) stands in for them')
        return events

    def _apply_input(self, kind, value, t) -> None:
        engine = self.engine
        if kind == 'instruction':
            problem = _instruction_problem(value)
            if problem:
                engine.report_input_error(f'rejected {problem}', t)
            else:
                engine.set_instruction(value)
        elif kind == 'image':
            camera, frame = value
            engine.set_image(camera, frame.rgb, frame.stamp if frame.stamp > 0 else t)
        elif kind == 'joints':  # as the node's joint_states callback
            names = list(value.names)
            try:
                if names and len(names) != len(value.positions):
                    raise ValueError(f'{len(names)} names but {len(value.positions)} positions')
                if self.layout.joint_names:
                    engine.set_joint_positions(names, value.positions)
                if self._use_proprio:
                    engine.set_proprio(self._proprio_layout.vector(names, value.positions))
            except ValueError as exc:
                engine.report_input_error(f'joint_states: {exc}', t)

    def _tick(self, t: float) -> np.ndarray:
        out = shape_command(self.engine.command_at(t), self.limits, self.engine.last_gripper)
        if self.layout.joint_names:
            return self.layout.row(None, out.gripper, out.base_twist, out.joint_names or (),
                                   out.joint_positions, out.joint_velocities)
        return self.layout.row(out.ee_twist, out.gripper, out.base_twist)

    def _frames_for_chunk(self, chunk, available: float) -> dict | None:
        frames = {}
        history = self.session.images.get(self._primary, [])
        match = min(history, key=lambda f: abs(f.stamp - chunk.stamp), default=None)
        if match is None or abs(match.stamp - chunk.stamp) > 1e-6:
            self.notes.append(f'chunk at {chunk.recv:.3f}s: camera {self._primary!r} frame '
                              f'stamped {chunk.stamp:.6f} is not in the bag; '
                              f'chunk not reproduced')
            return None
        frames[self._primary] = Frame(match.rgb, match.stamp)
        for camera in self._cameras[1:]:
            older = [f for f in self.session.images.get(camera, []) if f.recv <= available]
            if not older:
                self.notes.append(f'chunk at {chunk.recv:.3f}s: no frame of camera '
                                  f'{camera!r} before it')
                return None
            frames[camera] = Frame(older[-1].rgb, older[-1].stamp)
        return frames

    # ----------------------------------------------------------------- modes
    def run_recorded_schedule(self) -> np.ndarray:
        """Chunks at their recorded times, from their recorded frames."""
        # Order: by the recorder's receive times, which all events have on one clock. A
        # chunk is published before it is buffered, so one received before a tick's
        # command was there for that tick; its own transport (a larger message) is not
        # the ticks' median delay, which decided this wrongly by a millisecond.
        # Engine times: a tick at its stamp, a chunk at its receive time minus that delay.
        # A chunk ordered before a tick is buffered no later than that tick's stamp.
        # A tick is ordered at its decision: the recorder's receive time minus the lead
        # with which the node computed it (0 without a control process), so inputs and
        # chunks that came in between were not there for it, as on the robot.
        # Newer recordings say exactly which commands the node computed before it buffered
        # each chunk (``buffered_after_command``): the chunk goes right after the last of
        # them and before the next, wherever the receive times would put it.
        delay = self.session.transport_delay()
        events = [(recv, priority, kind, value, recv)
                  for recv, priority, kind, value in self._input_events()]
        decided = np.array([t.recv - self.decision_lead for t in self.session.ticks])
        stamps = np.array([t.stamp for t in self.session.ticks])
        for chunk in self.session.chunks:
            t, key, priority = chunk.recv - delay, chunk.recv, 3
            if chunk.buffered_after_command is None:
                following = np.flatnonzero(decided >= chunk.recv)
            else:
                key, priority, following = _order_after_command(
                    chunk.recv, chunk.buffered_after_command, stamps, decided)
            if following.size:
                t = min(t, min(self.session.ticks[i].stamp for i in following))
            events.append((key, priority, 'chunk', chunk, t))
        for i, tick in enumerate(self.session.ticks):
            events.append((decided[i], 4, 'tick', i, tick.stamp))
        events.sort(key=lambda e: (e[0], e[1]))
        rows = np.full((len(self.session.ticks), len(self.layout.names)), np.nan)
        for _, _, kind, value, t in events:
            if kind == 'tick':
                rows[value] = self._tick(t)
            elif kind == 'chunk':
                frames = self._frames_for_chunk(value, t)
                if frames is None:
                    continue
                chunk, error = self.engine.predict(frames, t)
                if chunk is None:
                    self.notes.append(f'chunk at {value.recv:.3f}s: {error}')
                    self.engine.record_inference_error(error, t)
                    continue
                self.engine.add_chunk(chunk, t)
                self.chunks_replayed += 1
            else:
                self._apply_input(kind, value, t)
        return rows

    def run_engine_schedule(self, tick_times) -> np.ndarray:
        """The engine schedules inference itself; each takes ``virtual_latency``."""
        events = self._input_events()
        for i, t in enumerate(tick_times):
            events.append((t, 4, 'tick', i))
        events.sort(key=lambda e: (e[0], e[1]))
        rows = np.full((len(tick_times), len(self.layout.names)), np.nan)
        scheduler = LockstepInference(self.engine, self.virtual_latency)  # as vla-ros eval
        for t, _, kind, value in events:
            scheduler.deliver(t)
            if kind == 'tick':
                rows[value] = self._tick(t)
            else:
                self._apply_input(kind, value, t)
            scheduler.maybe_infer(t)
        self.chunks_replayed += scheduler.chunks_buffered
        return rows


def run_regression(bag: str | Path, params: dict | None = None, tolerance=None,
                   schedule: str = 'auto', virtual_latency: float = 0.1,
                   namespace: str | None = None, policy_object=None, **param_sources
                   ) -> RegressionResult:
    """Replay ``bag`` in lock-step and compare with its recorded commands.

    ``params``: complete parameters (else resolved from the bag and ``param_sources``,
    see :func:`resolve_parameters`, e.g. ``configuration``, ``overrides``, ``policy``,
    ``policy_params``); ``policy_object``: an already built policy (tests).
    """
    if schedule not in ('auto', 'recorded', 'engine'):
        raise RegressionError(f'schedule must be auto, recorded or engine, got {schedule!r}')
    with BagReader(bag) as reader:
        session = load_session(reader, namespace, compressed=False)
        if session.parameters.get('image_transport') == 'compressed' or \
                (params or {}).get('image_transport') == 'compressed':
            session = load_session(reader, namespace, compressed=True)
        problems = list(reader.problems)
    if params is None:
        params = resolve_parameters(session.parameters, **param_sources)
    replay = LockstepReplay(session, params, policy_object, virtual_latency)
    layout = replay.layout
    if isinstance(tolerance, dict):
        tolerance = {**parse_tolerance(None, layout), **tolerance}
    else:
        tolerance = parse_tolerance(tolerance, layout)
    notes = problems + session.problems
    if not session.parameters:
        notes.append('the bag holds no recorded inference parameters; using defaults and '
                     'the given configuration')
    if not session.ticks:
        raise RegressionError(f'{bag}: no {layout.command_topic} commands under namespace '
                              f'{session.namespace or "/"} to compare with')
    if session.joint_space != bool(layout.joint_names):
        raise RegressionError(
            f'{bag}: the recorded commands are '
            f'{"cmd/joint" if session.joint_space else "cmd/ee_twist"} but the configuration '
            f'publishes {layout.command_topic} (command_interface '
            f'{params.get("command_interface", "ee_twist")!r})')
    use_recorded = schedule == 'recorded' or (schedule == 'auto' and session.chunks)
    if schedule == 'recorded' and not session.chunks:
        raise RegressionError(f'{bag}: no vla/action_chunk messages; use --schedule engine')
    times = np.array([t.stamp for t in session.ticks])
    if use_recorded:
        replayed = replay.run_recorded_schedule()
    else:
        replayed = replay.run_engine_schedule(times)
    recorded = np.array([layout.row(t.ee_twist, t.gripper, t.base, t.joint_names,
                                    t.joint_positions, t.joint_velocities)
                         for t in session.ticks])
    rel = times - times[0]
    return RegressionResult(
        bag=str(bag), schedule='recorded' if use_recorded else 'engine',
        policy=replay.policy_name, ticks=len(times), chunks_replayed=replay.chunks_replayed,
        dimensions=compare(rel, recorded, replayed, tolerance, layout.names), times=rel,
        recorded=recorded, replayed=replayed, notes=notes + replay.notes,
        parameters=params, dimension_names=layout.names)

