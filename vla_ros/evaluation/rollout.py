"""Closed-loop rollouts of a policy on the simulated tasks, in simulated time.

:func:`rollout` runs one episode the way the inference node runs a robot, minus ROS: the
node's own :class:`~vla_ros.runtime.engine.InferenceEngine` decides when to infer, buffers
chunks with the chosen strategy and turns every control tick into a command, driven in
lock-step with the simulator by :class:`~vla_ros.runtime.lockstep.LockstepInference`.
Each tick the policy's cameras are offered to the engine stamped with the sim time (they
are rendered only if an inference actually uses them), the twist of ``command_at(t)`` is
applied to the simulator, and a hold (starved buffer, policy error, ...) keeps the arm
still and the gripper as it is. The episode ends on success, on a persistent
wrong-object event, or at the task's step limit; with ``until_horizon=True`` success does
not end it, so the result also says whether the task is still achieved at the horizon
(``success_at_end``: the object still lifted, the hand still at the target), which is
what a user sees. A policy that raises or returns a bad
chunk is handled by the engine exactly as on the robot: it holds, and the episode counts
the error. The engine also filters the gripper command (``gripper_mode``) and, when the
policy says done (a ``terminate`` dimension), holds until a new instruction, as on the
robot; the rollout only records when that happened.

The engine configuration comes from :func:`eval_engine_config`. Its defaults reproduce
the schedule ``vla-ros eval`` always used: infer every ``replan_every`` ticks (default: a
receding-horizon strategy's ``execute_steps``, else every tick), never earlier
(``low_queue_depth`` 0: only a starved buffer triggers an extra inference), chunks timed
from their observation. Pass the node's parameters instead (``engine_config``, or
``vla-ros eval --node-params``) to measure exactly what a launch configuration runs. A
chunk arrives ``inference_latency`` simulated seconds after its observation, so a latency
of 0.25 s at 10 Hz makes the first two or three actions of every chunk stale, as on a
real robot.

Policies only see observations. A policy may take privileged simulator access through
:meth:`Policy.attach_simulator` (only the scripted expert does); the rollout calls it
before the episode, which is the one place privileged state crosses over. A policy whose
``needs_images`` is false gets blank frames of the declared size instead of renders.

End of episode: :func:`_finish` judges the outcome and builds the
:class:`RolloutResult`; episode-level metrics belong there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.datasets.episodes import Episode
from vla_ros.policies.contract import Observation, Policy
from vla_ros.runtime.commands import ActionToCommand
from vla_ros.runtime.engine import EngineConfig, InferenceEngine
from vla_ros.runtime.lockstep import LockstepInference, default_inference_interval
from vla_ros.sim.tasks import Task, TaskInstance, get_task

__all__ = ['RolloutResult', 'rollout', 'run_episodes', 'collect_demonstrations',
           'eval_engine_config', 'proprio_vector', 'make_sim', 'PROPRIO_NAMES']

PROPRIO_NAMES = tuple(f'joint{i}' for i in range(1, 8)) + ('gripper',)
DEFAULT_RECORD_CAMERAS = ('front', 'wrist')


def proprio_vector(sim) -> np.ndarray:
    """Proprioception: the 7 arm joint positions (rad) and the gripper opening (0..1)."""
    q = sim.joint_positions()
    arm = q[len(q) - 9:len(q) - 2]  # skip mobile-base joints if any, and the fingers
    return np.r_[arm, sim.gripper_opening()].astype(np.float32)


def make_sim(image_size=(64, 64)):
    """An ArmSim for rollouts (fixed base, both cameras available)."""
    from vla_ros.sim.scene import ArmSim

    return ArmSim(image_size=image_size, cameras=('front', 'wrist'))


@dataclass
class RolloutResult:
    """How one episode went (plus frames or a recorded Episode when asked for)."""

    task: str
    seed: int
    split: str
    target: str
    direction: str | None
    instruction: str
    template: str
    success: bool           # achieved at some tick (the first success)
    wrong_object: bool
    steps: int
    inference_calls: int
    success_at_end: bool = False     # achieved at the last tick run
    first_success_step: int | None = None
    gripper_commands: list = field(default_factory=list)  # executed opening per tick
    until_horizon: bool = False      # success did not end the episode
    terminated_step: int | None = None  # tick at which the policy said done (then held)
    control_period: float = 0.1
    inference_wall_s: list = field(default_factory=list)
    hold_ticks: int = 0
    policy_errors: int = 0
    first_error: str = ''
    wall_time_s: float = 0.0
    metrics: dict = field(default_factory=dict)
    first_frame: np.ndarray | None = None
    last_frame: np.ndarray | None = None
    episode: Episode | None = None

    @property
    def mean_inference_s(self) -> float:
        """Mean wall time of one ``predict_chunk`` call (NaN if none ran)."""
        return float(np.mean(self.inference_wall_s)) if self.inference_wall_s else math.nan

    def summary(self) -> dict:
        """JSON-friendly record without arrays."""
        return {'task': self.task, 'seed': self.seed, 'split': self.split,
                'target': self.target, 'direction': self.direction,
                'instruction': self.instruction, 'template': self.template,
                'success': self.success, 'success_at_end': self.success_at_end,
                'first_success_step': self.first_success_step,
                'until_horizon': self.until_horizon, 'terminated_step': self.terminated_step,
                'wrong_object': self.wrong_object, 'steps': self.steps,
                'inference_calls': self.inference_calls,
                'mean_inference_s': self.mean_inference_s, 'hold_ticks': self.hold_ticks,
                'policy_errors': self.policy_errors, 'first_error': self.first_error,
                'wall_time_s': self.wall_time_s, 'metrics': self.metrics}


def _instance(task, seed, split) -> TaskInstance:
    if isinstance(task, TaskInstance):
        return task
    if isinstance(task, str):
        task = get_task(task)
    if not isinstance(task, Task):
        raise ValueError(f'task must be a Task, a task name or a TaskInstance, got {task!r}')
    return task.sample(seed, split)


def _observe(sim, policy: Policy, instruction: str, stamp: float) -> Observation:
    """A direct observation (for the DAgger labeler, which is not scheduled)."""
    spec = policy.spec
    frames = _SimCameras(sim, policy.needs_images)
    images = {cam: frames.frame(cam).image(spec.image_size) for cam in spec.camera_names}
    proprio = proprio_vector(sim) if spec.uses_proprio else None
    return Observation(images=images, instruction=instruction, stamp=stamp, proprio=proprio)


class _SimCameras:
    """The simulator's cameras as the engine's frame source, rendered on demand.

    The engine wants the newest frame of every camera on every tick, but uses one only
    when an inference starts, on that same tick. A :class:`_SimFrame` therefore renders
    when the engine preprocesses it, refusing once the simulator has stepped past it, so
    a tick costs no render unless the policy really looks.
    """

    def __init__(self, sim, needs_images: bool = True) -> None:
        self.sim = sim
        self.needs_images = bool(needs_images)
        self.tick = 0
        self.render_s = 0.0  # wall time spent rendering, kept out of inference latency

    def frame(self, camera: str) -> '_SimFrame':
        """The current view of ``camera`` (valid until :meth:`advance`)."""
        return _SimFrame(self, camera, self.tick)

    def advance(self) -> None:
        """The simulator stepped: frames handed out so far are stale."""
        self.tick += 1


@dataclass(frozen=True)
class _SimFrame:
    cameras: _SimCameras
    camera: str
    tick: int

    def image(self, size) -> np.ndarray:
        """RGB uint8 (h, w, 3) at ``size`` = (w, h): a render, or blank if never looked at."""
        if self.tick != self.cameras.tick:
            raise RuntimeError(f'camera {self.camera!r} frame of tick {self.tick} used at '
                               f'tick {self.cameras.tick}: the simulator has moved on')
        if not self.cameras.needs_images:  # privileged policies: valid but blank frames
            w, h = size
            return np.zeros((h, w, 3), np.uint8)
        started = time.perf_counter()
        image = self.cameras.sim.render(self.camera, size=tuple(size))
        self.cameras.render_s += time.perf_counter() - started
        return image


def _render_frame(frame: '_SimFrame', size, method: str = 'default') -> np.ndarray:
    """The engine's preprocess step for simulated frames.

    They are rendered at the policy's size directly, so there is no resize (``method``).
    """
    return frame.image(size)


def eval_engine_config(spec, control_period: float | None = None,
                       strategy: str = 'receding_horizon', strategy_params: dict | None = None,
                       replan_every: int | None = None, inference_rate_hz: float | None = None,
                       low_queue_depth: int = 0, chunk_timing: str = 'observation'
                       ) -> EngineConfig:
    """The inference engine's configuration for an offline rollout of a policy with ``spec``.

    The control rate is ``1 / control_period`` (default: the spec's). Inference runs at
    ``inference_rate_hz``, or every ``replan_every`` control ticks (default: a receding
    horizon's ``execute_steps`` capped at the chunk length, else every tick); give one or
    the other. ``low_queue_depth`` and ``chunk_timing`` are the node's parameters of the
    same names (defaults: only a starved buffer triggers an extra inference, chunks
    timed from their observation).
    """
    period = float(spec.control_period if control_period is None else control_period)
    if not (math.isfinite(period) and period > 0):
        raise ValueError(f'control_period must be positive, got {control_period!r}')
    params = dict(strategy_params or {})
    if replan_every is not None and inference_rate_hz is not None:
        raise ValueError('give replan_every or inference_rate_hz, not both')
    if inference_rate_hz is None:
        replan = default_inference_interval(spec.chunk_length, strategy, params) \
            if replan_every is None else int(replan_every)
        if replan < 1:
            raise ValueError(f'replan_every must be >= 1, got {replan_every!r}')
        inference_rate_hz = 1.0 / (replan * period)
    return EngineConfig(control_rate_hz=1.0 / period, inference_rate_hz=float(inference_rate_hz),
                        low_queue_depth=int(low_queue_depth), chunk_strategy=strategy,
                        strategy_params=params, chunk_timing=chunk_timing)


def rollout(policy: Policy, task, seed: int = 0, split: str = 'test',
            strategy: str = 'receding_horizon', strategy_params: dict | None = None,
            control_period: float | None = None, inference_latency: float = 0.0,
            replan_every: int | None = None, image_size=(64, 64), record: bool = False,
            record_cameras=DEFAULT_RECORD_CAMERAS, frame_size=None, sim=None,
            wrong_object_patience: int = 3, action_noise: float = 0.0,
            noise_seed: int | None = None, labeler: Policy | None = None,
            engine_config: EngineConfig | None = None,
            until_horizon: bool = False) -> RolloutResult:
    """Run ``policy`` closed loop on one episode of ``task`` and judge it.

    ``task`` is a Task, a task name or a ready TaskInstance (then ``seed``/``split`` are
    taken from it). ``control_period`` defaults to the policy's. The inference schedule
    is :func:`eval_engine_config` of ``strategy``, ``strategy_params`` and
    ``replan_every``, or ``engine_config`` when given (then those three must be left
    at their defaults, and its control rate sets the tick period).
    ``inference_latency`` is simulated seconds between an observation and its chunk
    becoming usable.
    ``record=True`` also returns an :class:`Episode` (``record_cameras`` at ``image_size``,
    executed actions, stamps, proprioception, task metadata). ``frame_size`` (w, h) keeps
    the first and last front-camera frames for contact sheets. ``sim`` reuses a simulator
    (created and closed here otherwise).

    ``action_noise`` > 0 perturbs what is *executed* (DART, Laskey et al. 2017): every
    non-gripper dimension gets Gaussian noise with standard deviation ``action_noise`` x
    its bound (arm7: 0.2 -> 1 cm and 0.05 rad per period), seeded by ``noise_seed``. The
    recorded actions stay the policy's own, so an expert's demonstrations then show how
    to recover from states off its nominal path.

    ``labeler`` (DAgger, Ross et al. 2011): ``policy`` drives, and every tick the recorded
    action is what ``labeler`` (the privileged expert, chunk length 1) would do in the
    state ``policy`` led to. Needs ``record=True``.

    ``until_horizon``: keep running after success until the step limit (a persistent
    wrong-object event still ends the episode). A recorded episode always carries the
    per-frame ``done`` label (the task was already achieved in that frame's state).
    The gripper command hygiene (``gripper_mode`` and its thresholds/dwell) is part of
    ``engine_config``: the engine filters the gripper as the inference node does, and
    the recorded actions carry the opening it commanded.
    """
    if not isinstance(policy, Policy):
        raise ValueError(f'policy must be a Policy, got {type(policy).__name__}')
    spec = policy.spec
    if engine_config is None:
        engine_config = eval_engine_config(spec, control_period, strategy, strategy_params,
                                           replan_every)
    elif (strategy, strategy_params, replan_every) != ('receding_horizon', None, None):
        raise ValueError('with engine_config, give the strategy and schedule there only')
    elif control_period is not None and \
            abs(float(control_period) - engine_config.control_period) > 1e-12:
        raise ValueError(f'control_period {control_period} differs from engine_config\'s '
                         f'{engine_config.control_period}')
    period = engine_config.control_period
    if int(wrong_object_patience) < 1:
        raise ValueError('wrong_object_patience must be >= 1')
    if not (math.isfinite(action_noise) and 0.0 <= action_noise <= 1.0):
        raise ValueError(f'action_noise must be in [0, 1] (fraction of the bounds), got '
                         f'{action_noise!r}')
    noise = _ActionNoise(spec.action_space, float(action_noise), noise_seed) \
        if action_noise > 0 else None
    if labeler is not None:
        if not record:
            raise ValueError('labeler only makes sense with record=True')
        # A policy with a learned stop (arm7_done) is labelled in the expert's arm7: the
        # stop's label is the recorded done flag.
        own = spec.action_space.names
        if labeler.spec.chunk_length != 1 or labeler.spec.action_space.names not in (
                own, own[:-1] if own[-1:] == ('terminate',) else None):
            raise ValueError('the labeler must output single arm actions in the policy\'s '
                             'action space')
    instance = _instance(task, seed, split)
    if ActionToCommand(spec.action_space).has_base:
        raise ValueError('the sim tasks use a fixed-base arm; base actions are not supported')
    if float(inference_latency) > engine_config.inference_timeout:
        raise ValueError(f'inference latency {inference_latency} s exceeds the engine\'s '
                         f'inference_timeout ({engine_config.inference_timeout} s): every '
                         f'inference would be overdue and the robot would hold')
    engine = InferenceEngine(engine_config, preprocess=_render_frame)
    scheduler = LockstepInference(engine, inference_latency)
    own_sim = sim is None
    sim = make_sim(image_size) if own_sim else sim
    started = time.perf_counter()
    try:
        return _run(policy, instance, sim, scheduler, period, record, tuple(record_cameras),
                    tuple(image_size), frame_size, int(wrong_object_patience), started, noise,
                    labeler,
                    bool(until_horizon))
    finally:
        if own_sim:
            sim.close()


def _start_episode(policy, labeler, instance, sim, scheduler) -> None:
    """Reset the scene, load the policy into the engine, give experts their privileges."""
    instance.reset(sim)
    engine = scheduler.engine
    engine.begin_policy_load(policy.spec.name)
    engine.finish_policy_load(policy.spec.name, policy)  # resets the policy
    engine.set_instruction(instance.instruction)
    for p in (policy, labeler):
        if p is not None:
            if p is labeler:
                p.reset()
            p.attach_simulator(sim, instance)


def _run(policy, instance, sim, scheduler, period, record, record_cameras, image_size,
         frame_size, patience, started, noise=None, labeler=None,
         until_horizon=False) -> RolloutResult:
    spec = policy.spec
    engine = scheduler.engine
    to_command = ActionToCommand(spec.action_space)
    _start_episode(policy, labeler, instance, sim, scheduler)
    cameras = _SimCameras(sim, policy.needs_images)
    first = sim.render('front', size=frame_size) if frame_size else None
    frames = {cam: [] for cam in record_cameras} if record else None
    actions, stamps, proprio, done = [], [], [], []
    trace = _EpisodeTrace(until_horizon)
    gripper = 1.0  # the scene starts with the gripper open
    holds, wrong_streak, inference_wall = 0, 0, []
    outcome = instance.evaluate(sim)
    wrong = False
    step = 0
    for step in range(instance.max_steps):
        now = step * period  # tick times by arithmetic, so no float drift reaches the buffer
        for cam in spec.camera_names:
            engine.set_image(cam, cameras.frame(cam), now)
        if spec.uses_proprio:
            engine.set_proprio(proprio_vector(sim))
        calls, rendered = len(scheduler.inference_wall_s), cameras.render_s
        command = scheduler.tick(now)
        if len(scheduler.inference_wall_s) > calls:  # the policy's time, not the renderer's
            inference_wall.append(scheduler.inference_wall_s[-1] - (cameras.render_s - rendered))
        if record:
            for cam in record_cameras:
                frames[cam].append(sim.render(cam, size=image_size))
            proprio.append(proprio_vector(sim))
            stamps.append(now)
            done.append(outcome.success)  # the state this frame shows already achieves it
            if labeler is not None:
                label = labeler.check_chunk(labeler.predict_chunk(
                    _observe(sim, labeler, instance.instruction, now)))[0]
        if command.hold:
            holds += 1
            twist = np.zeros(6)
            executed = np.zeros(spec.action_space.dim)
            if 'gripper' in spec.action_space.names:
                executed[spec.action_space.index('gripper')] = gripper
        else:
            executed = command.action
            twist = command.ee_twist
            if noise is not None:  # perturb the motion only; gripper and stop stay the engine's
                twist = to_command(noise(executed), spec.control_period).ee_twist
            if command.terminate:  # the engine holds from the next tick on, as on the robot
                trace.terminated_step = step
            if command.gripper is not None:  # as the engine's gripper_mode filtered it
                gripper = command.gripper
                if 'gripper' in spec.action_space.names:
                    executed = executed.copy()
                    executed[spec.action_space.index('gripper')] = gripper
        trace.gripper_commands.append(gripper)
        actions.append(executed if labeler is None else labeler.spec.action_space.clip(label))
        sim.step_ee_twist(twist, gripper, dt=period)
        cameras.advance()
        outcome = instance.evaluate(sim)
        wrong_streak = wrong_streak + 1 if outcome.wrong_object else 0
        wrong = wrong or wrong_streak >= patience
        if outcome.success and trace.first_success_step is None:
            trace.first_success_step = step + 1
        if wrong or (outcome.success and not trace.until_horizon):
            break
    return _finish(policy, instance, sim, scheduler.errors, inference_wall, outcome, wrong,
                   step + 1, holds, period, frame_size, first, started, noise, labeler,
                   trace, (frames, actions, stamps, proprio, done) if record else None)


@dataclass
class _EpisodeTrace:
    """What an episode did besides its outcome: first success, the stop, gripper commands."""

    until_horizon: bool
    first_success_step: int | None = None
    terminated_step: int | None = None
    gripper_commands: list = field(default_factory=list)


def _finish(policy, instance, sim, errors, inference_wall, outcome, wrong, steps, holds,
            period, frame_size, first, started, noise, labeler, trace: _EpisodeTrace,
            recorded) -> RolloutResult:
    """Judge the finished episode and package it (and its recording, if any).

    ``outcome`` is the judgement after the last tick run: with ``trace.until_horizon``
    that is the end of the horizon (``success_at_end``), beside the first success.
    """
    spec = policy.spec
    first_success = trace.first_success_step
    last = sim.render('front', size=frame_size) if frame_size else None
    episode = None
    if recorded is not None:
        frames, actions, stamps, proprio, done = recorded
        episode = Episode(
            instruction=instance.instruction,
            action_space=(labeler or policy).spec.action_space.name,
            control_period=period,
            images={cam: np.stack(f) for cam, f in frames.items()},
            actions=np.array(actions, dtype=np.float32), stamps=np.array(stamps),
            proprio=np.array(proprio), done=np.array(done, dtype=bool), metadata={
                **instance.info(), 'success': first_success is not None,
                'success_at_end': outcome.success, 'first_success_step': first_success,
                'until_horizon': trace.until_horizon, 'wrong_object': wrong,
                'policy': spec.name, 'proprio_names': list(PROPRIO_NAMES),
                'action_noise': 0.0 if noise is None else noise.scale,
                'labels': 'executed' if labeler is None else labeler.spec.name})
    return RolloutResult(
        task=instance.task.name, seed=instance.seed, split=instance.split,
        target=instance.target, direction=instance.direction,
        instruction=instance.instruction, template=instance.template,
        success=first_success is not None, wrong_object=wrong, steps=steps,
        success_at_end=outcome.success, first_success_step=first_success,
        gripper_commands=trace.gripper_commands, until_horizon=trace.until_horizon,
        control_period=period, terminated_step=trace.terminated_step,
        inference_calls=len(inference_wall), inference_wall_s=inference_wall,
        hold_ticks=holds, policy_errors=len(errors), first_error=errors[0] if errors else '',
        wall_time_s=time.perf_counter() - started,
        metrics=outcome.metrics, first_frame=first, last_frame=last, episode=episode)


class _ActionNoise:
    """Seeded Gaussian perturbation of executed actions (gripper and terminate left alone)."""

    def __init__(self, space, scale: float, seed: int | None) -> None:
        self.scale = scale
        self._space = space
        self._std = scale * np.maximum(np.abs(space.low), np.abs(space.high))
        for name in ('gripper', 'terminate'):  # states, not motions
            if name in space.names:
                self._std[space.index(name)] = 0.0
        self._rng = np.random.default_rng(seed)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        return self._space.clip(action + self._rng.normal(0.0, 1.0, action.shape) * self._std)


def run_episodes(policy: Policy, tasks, episodes: int, seed: int = 0, split: str = 'test',
                 progress: bool = False, **rollout_kwargs) -> list[RolloutResult]:
    """Roll out ``episodes`` seeds (``seed``, ``seed + 1``, ...) of every task in ``tasks``.

    Seeds are shared between tasks and runs, so different policies or strategies are
    compared on identical layouts and instructions. One simulator (``sim``, or one made
    here and closed at the end) serves all episodes; other keywords go to :func:`rollout`.
    """
    tasks = [get_task(t) if isinstance(t, str) else t for t in tasks]
    if int(episodes) < 1:
        raise ValueError(f'episodes must be >= 1, got {episodes!r}')
    jobs = [(task, seed + i) for task in tasks for i in range(int(episodes))]
    sim = rollout_kwargs.pop('sim', None)
    own_sim = sim is None
    if own_sim:
        sim = make_sim(rollout_kwargs.get('image_size', (64, 64)))
    results = []
    try:
        bar = _progress(len(jobs), 'episodes', progress)
        for task, episode_seed in jobs:
            result = rollout(policy, task, episode_seed, split, sim=sim, **rollout_kwargs)
            results.append(result)
            if bar is not None:
                bar.update(1)
                rate = sum(r.success for r in results) / len(results)
                bar.set_postfix(task=task.name, success=f'{rate:.2f}')
        if bar is not None:
            bar.close()
    finally:
        if own_sim:
            sim.close()
    return results


def _progress(total: int, unit: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True)


def collect_demonstrations(output, tasks, episodes: int, seed: int = 0, split: str = 'train',
                           image_size=(64, 64), cameras=DEFAULT_RECORD_CAMERAS,
                           policy: Policy | None = None, progress: bool = False,
                           action_noise: float = 0.0, expert_labels: bool = False,
                           until_horizon: bool = True) -> dict:
    """Record ``episodes`` expert attempts per task into an EpisodeDataset directory.

    ``action_noise`` > 0: each episode executes the expert's actions with noise of a
    scale drawn uniformly from [0, action_noise] for that episode (see :func:`rollout`),
    so the data mixes clean runs with recoveries; the recorded labels are always clean.

    ``expert_labels`` (DAgger): ``policy`` (e.g. a trained one) drives and the scripted
    expert labels every visited state; then every episode is kept, failed or not, since
    the expert's corrections are most useful exactly where the policy went wrong.

    ``until_horizon`` (default): episodes run to the task's horizon after success, so the
    data shows holding the lifted object still / staying at the target, and every frame
    carries the ``done`` label; an expert episode is then kept only if the task is still
    achieved at the horizon. False: episodes end at the first success (the old data).

    Only successful episodes are written (``episode_00000.npz``, ... as
    :class:`~vla_ros.datasets.episodes.EpisodeDataset` names them), one at a time so memory
    stays flat; ``collection.json`` in the same directory holds the counts. Returns it.
    """
    import json

    from vla_ros.sim.expert import ScriptedExpert

    output = Path(output)
    if any(output.glob('episode_*.npz')):
        raise FileExistsError(f'{output} already holds episodes; choose an empty directory')
    output.mkdir(parents=True, exist_ok=True)
    if not (math.isfinite(action_noise) and 0.0 <= action_noise <= 1.0):
        raise ValueError(f'action_noise must be in [0, 1], got {action_noise!r}')
    if expert_labels and policy is None:
        raise ValueError('expert_labels needs the policy that drives')
    policy = policy or ScriptedExpert(image_size=image_size)
    labeler = ScriptedExpert(image_size=image_size) if expert_labels else None
    tasks = [get_task(t) if isinstance(t, str) else t for t in tasks]
    counts = {t.name: {'attempted': 0, 'succeeded': 0, 'succeeded_at_end': 0, 'kept': 0,
                       'steps': 0} for t in tasks}
    written = 0
    sim = make_sim(image_size)
    bar = _progress(len(tasks) * int(episodes), 'episodes', progress)
    started = time.perf_counter()
    try:
        for task in tasks:
            for i in range(int(episodes)):
                # Scale and noise stream are pure functions of the episode (task, seed).
                rng = np.random.default_rng([seed + i, task._index, 7])
                result = rollout(policy, task, seed + i, split, record=True,
                                 record_cameras=cameras, image_size=image_size, sim=sim,
                                 action_noise=float(rng.uniform(0.0, action_noise)),
                                 noise_seed=int(rng.integers(2**31)), labeler=labeler,
                                 until_horizon=until_horizon)
                entry = counts[task.name]
                entry['attempted'] += 1
                entry['succeeded'] += int(result.success)
                entry['succeeded_at_end'] += int(result.success_at_end)
                achieved = result.success_at_end if until_horizon else result.success
                if achieved or labeler is not None:
                    result.episode.save(output / f'episode_{written:05d}.npz')
                    written += 1
                    entry['kept'] += 1
                    entry['steps'] += result.steps
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(task=task.name, kept=written)
    finally:
        sim.close()
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    summary = {'output': str(output), 'split': split, 'seed': seed,
               'episodes_per_task': int(episodes), 'image_size': list(image_size),
               'cameras': list(cameras), 'policy': policy.spec.name,
               'action_noise': action_noise, 'until_horizon': until_horizon,
               'labels': labeler.spec.name if labeler else 'executed', 'tasks': counts,
               'attempted': sum(c['attempted'] for c in counts.values()),
               'kept': written, 'steps': sum(c['steps'] for c in counts.values()),
               'wall_time_s': round(elapsed, 2),
               'episodes_per_s': round(len(tasks) * int(episodes) / max(elapsed, 1e-9), 2)}
    (output / 'collection.json').write_text(json.dumps(summary, indent=2))
    return summary
