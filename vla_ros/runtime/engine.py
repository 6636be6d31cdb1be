"""The inference engine: everything the inference node does, without ROS.

The node feeds it camera frames, the instruction and proprioception, asks it on every
control tick for a command (O(1): a buffer lookup and a conversion), and lets a worker
thread run the policy whenever :meth:`InferenceEngine.inference_due` says so. Keeping
this logic free of rclpy makes it testable without a graph and lets bag regression run
it in lock-step with recorded time.

All times are float seconds on one clock (the node's clock, or a bag's recorded time).
"""

import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np

from vla_ros.actions.chunk_buffer import ChunkBuffer, TimedChunk, make_strategy
from vla_ros.actions.gripper import GripperFilter, GripperFilterConfig
from vla_ros.policies.contract import Observation, Policy
from vla_ros.runtime.commands import Command, joint_hold, make_converter
from vla_ros.runtime.joint_commands import JointConfig

SWAP_BEHAVIORS = ('hold', 'keep')
# 'observation': action i is for stamp + i * period (late actions are skipped, as in
# real-time chunking); 'arrival': a chunk starts when it arrives, for single-step policies
# (OpenVLA, RT-1, RT-2) whose one action would otherwise always be late.
CHUNK_TIMINGS = ('observation', 'arrival')
# Benchmarks only: append "policy stamp preprocess_s model_s" per inference to this file,
# so the pipeline's overhead can be told apart from the model's own compute time.
TIMING_LOG_ENV = 'VLA_ROS_TIMING_LOG'


class EngineState(IntEnum):
    """Values shared with vla_ros_msgs/PolicyStatus.STATE_*."""

    LOADING = 0
    READY = 1
    RUNNING = 2
    HOLDING = 3
    ERROR = 4
    DONE = 5  # the policy said the task is complete; holding until a new instruction


@dataclass(frozen=True)
class EngineConfig:
    """Rates, timeouts and the chunk strategy; validated on construction."""

    control_rate_hz: float = 10.0
    inference_rate_hz: float = 5.0
    low_queue_depth: int = 2
    stale_image_timeout: float = 1.0
    inference_timeout: float = 2.0
    chunk_strategy: str = 'receding_horizon'
    strategy_params: dict = field(default_factory=dict)
    swap_behavior: str = 'hold'
    future_stamp_tolerance: float = 0.5
    chunk_timing: str = 'observation'
    # Gripper command hygiene (vla_ros.actions.gripper): 'continuous' passes the policy's
    # opening through; 'binary' thresholds it with hysteresis and a minimum dwell.
    gripper_mode: str = 'continuous'
    gripper_close_threshold: float = GripperFilterConfig.close_threshold
    gripper_open_threshold: float = GripperFilterConfig.open_threshold
    gripper_min_dwell_s: float = GripperFilterConfig.min_dwell_s

    def __post_init__(self):
        if not 1.0 <= self.control_rate_hz <= 1000.0:
            raise ValueError(f'control_rate_hz must be in [1, 1000], got {self.control_rate_hz}')
        if not 0.0 <= self.inference_rate_hz <= 100.0:
            raise ValueError(
                f'inference_rate_hz must be in [0, 100] (0 = only when the buffer runs low), '
                f'got {self.inference_rate_hz}')
        if self.low_queue_depth < 0:
            raise ValueError(f'low_queue_depth must be >= 0, got {self.low_queue_depth}')
        if self.inference_rate_hz == 0.0 and self.low_queue_depth == 0:
            raise ValueError('with inference_rate_hz = 0 a low_queue_depth > 0 must trigger '
                             'inference, otherwise the policy never runs')
        for name in ('stale_image_timeout', 'inference_timeout', 'future_stamp_tolerance'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be positive, got {getattr(self, name)}')
        if self.swap_behavior not in SWAP_BEHAVIORS:
            raise ValueError(f'swap_behavior must be one of {SWAP_BEHAVIORS}, '
                             f'got {self.swap_behavior!r}')
        if self.chunk_timing not in CHUNK_TIMINGS:
            raise ValueError(f'chunk_timing must be one of {CHUNK_TIMINGS}, '
                             f'got {self.chunk_timing!r}')
        make_strategy(self.chunk_strategy, **self.strategy_params)  # validates names/params
        _ = self.gripper_filter_config  # validates the gripper settings

    @property
    def gripper_filter_config(self) -> GripperFilterConfig:
        """The gripper settings as a :class:`GripperFilterConfig`."""
        return GripperFilterConfig(self.gripper_mode, self.gripper_close_threshold,
                                   self.gripper_open_threshold, self.gripper_min_dwell_s)

    @property
    def control_period(self) -> float:
        """Seconds between control ticks."""
        return 1.0 / self.control_rate_hz


@dataclass(frozen=True)
class Frame:
    """The newest image of one camera: full-resolution RGB and its stamp."""

    rgb: np.ndarray
    stamp: float


@dataclass(frozen=True)
class StatusSnapshot:
    """Everything PolicyStatus and /diagnostics report."""

    state: EngineState
    policy: str
    last_inference_latency: float
    queue_depth: int
    observation_age: float
    instruction: str
    message: str
    inferences: int
    errors: int
    ticks: int
    hold_ticks: int


@dataclass(frozen=True)
class InferenceResult:
    """What one inference produced (for ActionChunk publishing and benchmarks)."""

    chunk: TimedChunk
    policy: str
    dimension_names: tuple
    latency: float
    started: float
    # The time of the last command computed before the chunk was buffered (nan: none):
    # the chunk is used from the next command on.
    buffered_after_command: float = float('nan')


class InferenceEngine:
    """Observation slots, inference scheduling, chunk buffer and command conversion."""

    def __init__(self, config: EngineConfig, preprocess=None,
                 joints: JointConfig | None = None):
        """Create an engine with no policy.

        ``preprocess(rgb, size, method)`` resizes frames; ``method`` is the policy spec's
        ``image_resize``. ``joints``: the robot's joint-space configuration (None: the
        robot takes end-effector twists); each policy's actions are matched to it by name
        when the policy loads.
        """
        self.config = config
        self.joints = joints
        self._measured_joints: dict[str, float] | None = None
        self._preprocess = preprocess or _default_preprocess
        self._lock = threading.RLock()
        self._last_command_time = float('nan')
        self._buffer = ChunkBuffer(make_strategy(config.chunk_strategy,
                                                 **config.strategy_params))
        self._policy: Policy | None = None
        self._policy_name = ''
        self._to_command = None  # ActionToCommand or ActionToJointCommand
        self._loading: str | None = None
        self._load_note = ''
        self._policy_note = ''
        self._frames: dict[str, Frame] = {}
        self._proprio: np.ndarray | None = None
        self._instruction = ''
        self._instruction_version = 0
        self._terminated = False
        self._last_used_stamp = -math.inf
        self._last_start = -math.inf
        self._running_since: float | None = None
        self._last_latency = math.nan
        self._last_error = ''
        self._last_error_time = -math.inf
        self._last_gripper: float | None = None
        self._gripper_filter = GripperFilter(config.gripper_filter_config)
        self._inferences = 0
        self._errors = 0
        self._ticks = 0
        self._hold_ticks = 0
        self._last_hold_reason = ''
        self._input_error = ''
        self._input_error_time = -math.inf

    # ------------------------------------------------------------------ inputs
    def set_instruction(self, text: str) -> None:
        """Condition the policy on a new instruction; clears the buffer."""
        text = text.strip()
        with self._lock:
            self._instruction = text
            self._instruction_version += 1
            self._terminated = False
            self._buffer.clear()
            self._last_start = -math.inf
            if self._policy is not None:
                self._policy.reset()

    def set_image(self, camera: str, rgb: np.ndarray, stamp: float) -> None:
        """Store the newest frame of ``camera`` (keeps only the newest)."""
        with self._lock:
            self._frames[camera] = Frame(rgb, float(stamp))

    def latest_frames(self) -> dict:
        """Camera -> its newest Frame (a snapshot; a Frame is never changed in place)."""
        with self._lock:
            return dict(self._frames)

    def set_proprio(self, state: np.ndarray) -> None:
        """Store the newest proprioceptive state (e.g. joint positions)."""
        with np.errstate(over='ignore'):  # values beyond float32 become inf: refused below
            state = np.asarray(state, dtype=np.float32)
        if state.ndim != 1 or state.size == 0 or not np.all(np.isfinite(state)):
            raise ValueError('proprioception must be a finite, non-empty 1-D vector')
        with self._lock:
            self._proprio = state

    def set_joint_positions(self, names, positions) -> None:
        """Store the newest measured joint positions by name (joint holds and deltas)."""
        positions = np.asarray(positions, dtype=np.float64)
        if len(names) != positions.size:
            raise ValueError(f'{len(names)} joint names but {positions.size} positions')
        measured = {str(n): float(v) for n, v in zip(names, positions, strict=True)
                    if np.isfinite(v)}
        with self._lock:
            self._measured_joints = {**(self._measured_joints or {}), **measured}

    @property
    def measured_joints(self) -> dict[str, float] | None:
        """The newest measured joint positions by name (None before any arrived)."""
        return self._measured_joints

    def report_input_error(self, message: str, now: float) -> None:
        """Record a rejected input (bad image, instruction...) for the status message."""
        with self._lock:
            self._input_error = message
            self._input_error_time = now

    def reconfigure(self, config: EngineConfig) -> None:
        """Apply new timeouts / chunk strategy; a new strategy starts with an empty buffer."""
        with self._lock:
            if (config.chunk_strategy, config.strategy_params) != \
                    (self.config.chunk_strategy, self.config.strategy_params):
                self._buffer = ChunkBuffer(make_strategy(config.chunk_strategy,
                                                         **config.strategy_params))
            if config.gripper_filter_config != self._gripper_filter.config:
                self._gripper_filter = GripperFilter(config.gripper_filter_config)
            self.config = config

    # ------------------------------------------------------------------ policy
    @property
    def policy(self) -> Policy | None:
        """The active policy (None before the first successful load)."""
        return self._policy

    @property
    def policy_name(self) -> str:
        """Registry name of the active policy."""
        return self._policy_name

    def begin_policy_load(self, name: str) -> None:
        """Note that ``name`` is loading; with swap_behavior 'hold' the robot holds."""
        with self._lock:
            self._loading = name
            if self.config.swap_behavior == 'hold':
                self._buffer.clear()

    def finish_policy_load(self, name: str, policy: Policy | None, error: str = '',
                           note: str = '') -> str:
        """Switch atomically to ``policy``; on failure keep the old one and report.

        ``note`` (e.g. that the policy has no trained weights) stays in every status
        message while this policy is active. A policy whose actions do not fit the robot
        (joint names, or no end-effector dimensions for a twist robot) is refused like a
        failed load; the reason is returned ('' when the policy is active), so the caller
        can close it.
        """
        with self._lock:
            self._loading = None
            converter = None
            if policy is not None:
                try:
                    converter = make_converter(
                        policy.spec.action_space, self.joints,
                        bool(getattr(policy, 'action_names_known', True)))
                except ValueError as exc:
                    policy, error = None, str(exc)
            if policy is None:
                kept = f'; keeping {self._policy_name!r}' if self._policy else ''
                self._load_note = f'failed to load policy {name!r}: {error}{kept}'
                self._errors += 1
                return error or 'failed'
            self._policy = policy
            self._policy_name = name
            self._policy_note = note
            self._to_command = converter
            self._load_note = ''
            self._last_error = ''
            self._buffer.clear()
            self._last_used_stamp = -math.inf
            self._last_start = -math.inf
            policy.reset()
            return ''

    # --------------------------------------------------------------- inference
    def inference_due(self, now: float) -> bool:
        """Whether the worker should run the policy now (cheap; called every tick)."""
        with self._lock:
            if self._running_since is not None or self._observation_problem(now):
                return False
            if self._terminated or (self._loading and self.config.swap_behavior == 'hold'):
                return False
            if self._primary_frame().stamp <= self._last_used_stamp:
                return False  # nothing new to look at
            if now - self._last_error_time < 1.0 / max(self.config.inference_rate_hz, 1.0):
                return False  # back off after a failure
            rate = self.config.inference_rate_hz
            if rate > 0 and now - self._last_start >= 1.0 / rate - 1e-6:
                return True
            return self._buffer.depth(now) <= self.config.low_queue_depth

    def run_inference(self, clock, publish=None) -> InferenceResult | None:
        """Run the policy once on the newest observation; ``clock()`` gives the time.

        Synchronous: the worker thread calls it. It is :meth:`begin_inference`,
        :meth:`compute_chunk` and :meth:`finish_inference` in a row; lock-step replay calls
        those separately to put a virtual latency between start and finish.
        Errors are recorded in the status, never raised.
        """
        job = self.begin_inference(clock())
        if job is None:
            return None
        chunk, error = self.compute_chunk(job)
        return self.finish_inference(job, chunk, error, clock(), publish)

    def begin_inference(self, now: float) -> 'InferenceJob | None':
        """Snapshot the newest observation and mark the policy as running (None: cannot)."""
        with self._lock:
            if self._policy is None or self._observation_problem(now):
                return None
            policy = self._policy
            spec = policy.spec
            frames = {cam: self._frames[cam] for cam in spec.camera_names}
            job = InferenceJob(
                policy=policy, name=self._policy_name, version=self._instruction_version,
                frames=frames, instruction=self._instruction,
                proprio=self._proprio if spec.uses_proprio else None,
                stamp=frames[spec.camera_names[0]].stamp, started=now)
            self._running_since = now
            self._last_start = now
            self._last_used_stamp = job.stamp
            return job

    def compute_chunk(self, job: 'InferenceJob') -> tuple[TimedChunk | None, str]:
        """Run the job's policy (outside the lock, so control ticks never wait for it)."""
        return predict_chunk(job.policy, job.name, job.frames, job.instruction, job.proprio,
                             self._preprocess)

    def finish_inference(self, job: 'InferenceJob', chunk: TimedChunk | None, error: str,
                         finished: float, publish=None) -> InferenceResult | None:
        """Buffer the chunk at ``finished`` unless the instruction or policy changed.

        ``publish(result)``, if given, runs just before the chunk is buffered, with the
        lock held: a control tick on another thread sees the chunk either not yet on the
        wire or already buffered, never published but unused (a recording then orders
        the chunk against the ticks as the node did, up to transport latency); and never
        commands from a chunk a recording does not show.
        """
        with self._lock:
            self._running_since = None
            self._last_latency = finished - job.started
            if chunk is None:
                self._record_error(error, finished)
                return None
            if job.version != self._instruction_version or job.policy is not self._policy:
                return None  # instruction or policy changed while we were thinking
            result = InferenceResult(chunk, job.name,
                                     tuple(job.policy.spec.action_space.names),
                                     finished - job.started, job.started,
                                     self._last_command_time)
            if publish is not None:
                publish(result)
                if job.version != self._instruction_version or job.policy is not self._policy:
                    return None  # changed by the callback itself (the lock is re-entrant)
            if not self._buffer_chunk(chunk, finished):
                return None
        return result

    def predict(self, frames: dict, now: float) -> tuple[TimedChunk | None, str]:
        """Run the active policy on given ``frames`` with the current instruction.

        For lock-step replay of a recorded schedule: the recording says which camera
        frame each chunk came from, so the caller picks the frames.
        """
        with self._lock:
            if self._policy is None:
                return None, 'no policy loaded'
            policy, name = self._policy, self._policy_name
            instruction = self._instruction
            proprio = self._proprio if policy.spec.uses_proprio else None
        return predict_chunk(policy, name, frames, instruction, proprio, self._preprocess)

    def add_chunk(self, chunk: TimedChunk, now: float) -> None:
        """Buffer a chunk computed outside the engine, as if it finished at ``now``."""
        with self._lock:
            self._buffer_chunk(chunk, now)

    def _buffer_chunk(self, chunk: TimedChunk, now: float) -> bool:
        """Add a finished chunk to the buffer, placed in time by ``chunk_timing``."""
        if self.config.chunk_timing == 'arrival':
            age = now - chunk.stamp
            if age > self.config.stale_image_timeout:
                # Executing from arrival must not act on an observation this old.
                self._record_error(f'chunk computed from a {age:.2f} s old observation '
                                   f'dropped (> stale_image_timeout)', now)
                return False
            # Action 0 covers the ticks in [now, now + period).
            chunk = TimedChunk(stamp=now + chunk.period / 2, period=chunk.period,
                               actions=chunk.actions, source=chunk.source)
        self._inferences += 1
        self._last_error = ''
        self._buffer.add(chunk, now)
        return True

    def record_inference_error(self, message: str, now: float) -> None:
        """Record a failed externally scheduled inference (the engine reacts as to its own)."""
        with self._lock:
            self._record_error(message, now)

    # ----------------------------------------------------------------- control
    def command_at(self, now: float) -> Command:
        """The command for the control tick at ``now``: an action or a safe hold."""
        with self._lock:
            self._ticks += 1
            self._last_command_time = now
            reason = self._hold_reason(now)
            action = None
            if not reason:
                action = self._buffer.action_at(now)
                if action is None:
                    reason = f'action buffer starved ({self._buffer.status(now)})'
            if reason:
                return self._hold(reason)
            period = self._policy.spec.control_period
            try:
                command = self._to_command(action.action, period, self._measured_joints)
            except ValueError as exc:
                return self._hold(f'invalid action: {exc}')
            if command.hold:  # the row could not become a command (e.g. no measured joints)
                self._hold_ticks += 1
                self._last_hold_reason = command.reason
                return command
            if command.terminate:
                # The policy says the task is complete: publish terminate once, then hold
                # (status DONE) until a new instruction arrives.
                self._terminated = True
                self._buffer.clear()
            if command.gripper is not None:
                command = replace(command, gripper=self._gripper_filter(command.gripper, now))
                self._last_gripper = command.gripper
            self._last_hold_reason = ''
            return command

    @property
    def last_gripper(self) -> float | None:
        """Last gripper opening commanded (held while the robot holds)."""
        return self._last_gripper

    def queue_depth(self, now: float) -> int:
        """Actions left in the buffer for ticks at or after ``now``."""
        return self._buffer.depth(now)

    def status(self, now: float) -> StatusSnapshot:
        """A snapshot for PolicyStatus and diagnostics."""
        with self._lock:
            hold = self._hold_reason(now) or self._last_hold_reason
            if self._loading and (self._policy is None or self.config.swap_behavior == 'hold'):
                state, message = EngineState.LOADING, f'loading policy {self._loading!r}'
            elif self._policy is None:
                state = EngineState.ERROR if self._load_note else EngineState.LOADING
                message = self._load_note or 'no policy loaded'
            elif self._last_error and hold:
                state, message = EngineState.ERROR, f'holding: {self._last_error}'
            elif self._terminated:
                state = EngineState.DONE
                message = (f'done: the policy reports {self._instruction!r} complete; '
                           f'holding until a new instruction')
                other = self._observation_problem(now)
                if other:
                    message += f' (also: {other})'
            elif hold:
                state, message = EngineState.HOLDING, f'holding: {hold}'
            elif self._inferences == 0:
                state, message = EngineState.READY, 'ready'
            else:
                state, message = EngineState.RUNNING, 'running'
            if self._loading and state != EngineState.LOADING:
                message += f' (loading {self._loading!r} in the background)'
            if self._load_note and self._policy is not None:
                message += f' ({self._load_note})'
            if self._policy_note and self._policy is not None:
                message += f' ({self._policy_note})'
            if now - self._input_error_time < 5.0:
                message += f' (last rejected input: {self._input_error})'
            frame = self._primary_frame()
            age = now - frame.stamp if frame is not None else math.nan
            return StatusSnapshot(state, self._policy_name, self._last_latency,
                                  self._buffer.depth(now), age, self._instruction, message,
                                  self._inferences, self._errors, self._ticks,
                                  self._hold_ticks)

    # ---------------------------------------------------------------- internal
    def _hold(self, reason: str) -> Command:
        """A safe hold for this robot, counted, with the reason (call with the lock)."""
        self._hold_ticks += 1
        self._last_hold_reason = reason
        if self.joints is not None:
            return joint_hold(self.joints, reason, self._measured_joints)
        has_base = self._to_command is not None and self._to_command.has_base
        return Command.hold_command(reason, has_base)

    def _record_error(self, message: str, when: float) -> None:
        self._errors += 1
        self._last_error = message
        self._last_error_time = when
        # A policy that just failed may have been failing already: do not execute its
        # earlier chunks open-loop. Hold until it succeeds again.
        self._buffer.clear()

    def _primary_frame(self) -> Frame | None:
        if self._policy is not None:
            return self._frames.get(self._policy.spec.camera_names[0])
        return next(iter(self._frames.values()), None)

    def _observation_problem(self, now: float) -> str:
        """Why no valid observation exists now ('' if one does)."""
        if not self._instruction:
            return 'no instruction'
        if self._policy is None:
            return 'no policy loaded'
        for camera in self._policy.spec.camera_names:
            frame = self._frames.get(camera)
            if frame is None:
                return f'no image from camera {camera!r} yet'
            age = now - frame.stamp
            if age > self.config.stale_image_timeout:
                return (f'camera {camera!r} image stale ({age:.2f} s > '
                        f'{self.config.stale_image_timeout:.2f} s)')
            if age < -self.config.future_stamp_tolerance:
                return f'camera {camera!r} image stamped {-age:.2f} s in the future (clock skew?)'
        if self._policy.spec.uses_proprio and self._proprio is None:
            return 'no proprioception yet'
        return ''

    def _hold_reason(self, now: float) -> str:
        if self._loading and self.config.swap_behavior == 'hold':
            return f'loading policy {self._loading!r}'
        problem = self._observation_problem(now)
        if problem:
            return problem
        if self._terminated:
            return 'policy signalled terminate; waiting for a new instruction'
        if self._last_error:
            return self._last_error
        # Past its deadline the policy is faulty: stop even if buffered actions remain.
        if self._running_since is not None and \
                now - self._running_since > self.config.inference_timeout:
            return (f'policy {self._policy_name!r} exceeded its deadline '
                    f'({now - self._running_since:.2f} s > {self.config.inference_timeout} s)')
        return ''


@dataclass(frozen=True)
class InferenceJob:
    """What one inference runs on: the observation snapshot taken when it started."""

    policy: Policy
    name: str
    version: int
    frames: dict
    instruction: str
    proprio: np.ndarray | None
    stamp: float
    started: float


def predict_chunk(policy: Policy, name: str, frames: dict, instruction: str, proprio,
                  preprocess) -> tuple[TimedChunk | None, str]:
    """Run ``policy`` on ``frames`` (camera -> Frame): (chunk, '') or (None, error)."""
    spec = policy.spec
    try:
        missing = [cam for cam in spec.camera_names if cam not in frames]
        if missing:
            raise ValueError(f'no frame from camera(s) {missing}')
        stamp = frames[spec.camera_names[0]].stamp
        start = time.perf_counter()
        images = {cam: preprocess(frames[cam].rgb, spec.image_size, spec.image_resize)
                  for cam in spec.camera_names}
        observation = Observation(images=images, instruction=instruction, stamp=stamp,
                                  proprio=proprio)
        policy.validate_observation(observation)
        prepared = time.perf_counter()
        actions = policy.check_chunk(policy.predict_chunk(observation))
        _log_timing(name, stamp, prepared - start, time.perf_counter() - prepared)
        return TimedChunk(stamp=observation.stamp, period=spec.control_period,
                          actions=actions, source=name), ''
    except Exception as exc:  # noqa: BLE001 - any policy failure must hold, not crash
        return None, f'policy {name!r} failed: {type(exc).__name__}: {exc}'


def _log_timing(name: str, stamp: float, preprocess: float, model: float) -> None:
    path = os.environ.get(TIMING_LOG_ENV)
    if path:
        with open(path, 'a') as f:
            f.write(f'{name} {stamp:.9f} {preprocess:.6f} {model:.6f}\n')


def log_worker_timing(stamp: float, started: float, finished: float,
                      prepared: int = 0) -> None:
    """Benchmarks: when the worker sent a frame to the policy and got the chunk back.

    ``prepared``: how many cameras' frames the policy process had preprocessed ahead.
    """
    path = os.environ.get(TIMING_LOG_ENV)
    if path:
        with open(path, 'a') as f:
            f.write(f'@worker {stamp:.9f} {started:.6f} {finished:.6f} {prepared}\n')


def read_timing_log(path: str) -> dict:
    """Benchmarks: frame stamp (rounded to 1 us) -> what the two writers above logged.

    {'preprocess', 'model'} from the policy's line; with the node's worker line also
    {'sent', 'back', 'prepared'} (process mode).
    """
    timing = {}
    with open(path) as f:
        for line in f:
            name, stamp, a, b, *rest = line.split()
            entry = timing.setdefault(round(float(stamp), 6), {})
            if name == '@worker':
                entry.update(sent=float(a), back=float(b),
                             prepared=int(rest[0]) if rest else 0)
            else:
                entry.update(preprocess=float(a), model=float(b))
    return timing


def _default_preprocess(rgb: np.ndarray, size, method: str = 'default') -> np.ndarray:
    from vla_ros.images import prepare_image

    return prepare_image(rgb, size, method=method)
