"""The node fault campaign on a joint-space robot (docs/joint_space.md).

The twin of :func:`vla_ros.reliability.campaign.run_node_faults` with
``command_interface:=joint_position``: the inference node (the scripted policy acting in
``joint7_gripper``, absolute joint targets waving the first two joints), a dry-run driver
commanding the same 7 joints, and a camera, in this process. The same faults are injected
(the policy raises, returns NaN, the wrong shape or hangs; the camera stops; the e-stop
service), named with a ``joint_`` prefix and measured on the joint targets the backend
received.

A joint-space arm stops by holding a position: the inference node commands the measured
joints, the driver's watchdog and e-stop hold where the arm is. The stop is therefore the
first moment after the fault from which the backend's targets stay constant for
:data:`STILL_WINDOW` (two control periods: while the arm moves, targets change on every
control tick; the driver repeats a target between ticks). Targets: a fault the inference
node detects holds on its next tick, so detection timeout + one control period + one
driver period (no deceleration ramp: the hold is the measured position); the e-stop
holds on the next driver tick. Every target the backend got is also checked against the
joint limits and the per-tick step limit.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from vla_ros.reliability.campaign import (
    CAMERA_HZ,
    CAMERA_SIZE,
    CONTROL_RATE_HZ,
    DRIVER_RATE_HZ,
    INFERENCE_TIMEOUT,
    STALE_IMAGE_TIMEOUT,
    WATCHDOG_TIMEOUT,
    FaultResult,
    FaultRun,
    PeerSide,
    PolicyFaultSwitch,
)
from vla_ros.reliability.graph import (
    ObservedDriverNode,
    ObservedInferenceNode,
    SpinningGraph,
    wait_until,
    wall_time,
)
from vla_ros.sim import kinematics as kin

CHAIN = kin.panda_like_chain()  # the dry run's 7-joint arm (the MuJoCo arm's geometry)
JOINT_NAMES = CHAIN.joint_names
MAX_STEP = 0.05  # rad per driver tick
MAX_VELOCITY = 2.5  # rad/s
STILL_WINDOW = 2.0 / CONTROL_RATE_HZ  # s of constant targets that count as a stop
MOVING = 1e-4  # rad: a target change above this is motion
SETTLING_CHANGES = 2  # target changes allowed after a stop before it counts as moving
# Absolute targets: the first two joints on a 0.28 rad circle around the home pose.
POLICY_PARAMS = {'action_space': 'joint7_gripper', 'chunk_length': 20,
                 'control_period': 1.0 / CONTROL_RATE_HZ, 'pattern': 'sine',
                 'velocity': [0.2, -0.2, *CHAIN.home[2:].tolist()], 'gripper': 0.04,
                 'image_size': list(CAMERA_SIZE)}
INSTRUCTION = 'wave the first two joints'


class JointNodeRig(PeerSide):
    """Inference node + dry-run driver in joint_position mode + camera, in this process."""

    def __init__(self, context, namespace='joint_faults'):
        from rclpy.parameter import Parameter

        joints = {'command_interface': 'joint_position', 'joint_names': list(JOINT_NAMES)}
        inference = {**joints, 'policy': 'scripted',
                     'policy_params': json.dumps(POLICY_PARAMS),
                     'joint_action_mode': 'absolute', 'gripper_action': 'gripper',
                     'gripper_action_open': 0.04, 'control_rate_hz': CONTROL_RATE_HZ,
                     'inference_rate_hz': 5.0, 'inference_timeout': INFERENCE_TIMEOUT,
                     'stale_image_timeout': STALE_IMAGE_TIMEOUT, 'execute_steps': 4,
                     'policy_process': False}  # faults are switched on the policy object
        driver = {**joints, 'backend': 'dry_run', 'camera_rate_hz': 0.0,
                  'rate_hz': DRIVER_RATE_HZ, 'watchdog_timeout': WATCHDOG_TIMEOUT,
                  'joint_position_min': CHAIN.lower.tolist(),
                  'joint_position_max': CHAIN.upper.tolist(),
                  'joint_max_velocity': [MAX_VELOCITY] * len(JOINT_NAMES),
                  'joint_max_step': [MAX_STEP]}
        self.graph = SpinningGraph(context)
        self.inference = ObservedInferenceNode(
            context=context, namespace=namespace,
            parameter_overrides=[Parameter(k, value=v) for k, v in inference.items()])
        self.driver = ObservedDriverNode(
            context=context, namespace=namespace,
            parameter_overrides=[Parameter(k, value=v) for k, v in driver.items()])
        self.sent: list = []  # (wall time, positions) the backend received
        self.checked = 0
        self.unsafe: list = []
        self._start_peer(context, namespace, 'vla_joint_fault_peer',
                         (self.driver, self.inference))
        self.instruct(INSTRUCTION)

    def collect(self) -> list:
        """Take the backend's new joint targets, audit them; all targets so far."""
        for stamp, positions, _, _ in self.driver.take_sent_joints():
            if positions is None:
                continue  # interlock off: no arm command
            self.checked += 1
            problems = []
            if not np.all(np.isfinite(positions)):
                problems.append('non-finite target')
            elif np.any(positions < CHAIN.lower - 1e-9) or np.any(positions > CHAIN.upper + 1e-9):
                problems.append('target outside the joint limits')
            if self.sent and np.max(np.abs(positions - self.sent[-1][1])) > MAX_STEP + 1e-9:
                problems.append(f'step {np.max(np.abs(positions - self.sent[-1][1])):.4f} rad '
                                f'> joint_max_step {MAX_STEP}')
            if problems:
                self.unsafe.append({'t': stamp, 'positions': positions.tolist(),
                                    'problems': problems})
            self.sent.append((stamp, positions))
        return self.sent

    def targets_since(self, t0: float) -> list:
        """(wall time, positions) the backend received at or after ``t0``."""
        return [(t, q) for t, q in self.collect() if t >= t0]

    def status_message(self) -> str:
        """The inference node's current status message."""
        return self.inference.engine.status(wall_time()).message


def joint_stop(samples, fault_time: float, fault_end: float | None = None):
    """(stop time, moved during the fault) from (stamp, positions) samples.

    The stop is the first sample at or after ``fault_time`` from which the targets stay
    within :data:`MOVING` of it for :data:`STILL_WINDOW`; more than
    :data:`SETTLING_CHANGES` later changes before ``fault_end`` mean the hold did not last.
    """
    after = [(t, q) for t, q in samples if t >= fault_time]
    stop = None
    for i, (t, q) in enumerate(after):
        window = [p for s, p in after[i:] if s <= t + STILL_WINDOW]
        if after[-1][0] < t + STILL_WINDOW:
            break  # not enough samples to judge
        if all(np.max(np.abs(p - q)) <= MOVING for p in window):
            stop = (t, q)
            break
    if stop is None:
        return None, False
    # The hold commands the measured joints, which lag the last target by up to one
    # joint_states period: one or two settling adjustments follow a stop. Motion that
    # resumed changes the target on every control tick.
    later = [p for s, p in after if s > stop[0] and (fault_end is None or s < fault_end)]
    changes = sum(np.max(np.abs(b - a)) > MOVING
                  for a, b in zip([stop[1], *later], later, strict=False))
    return stop[0], changes > SETTLING_CHANGES


def _moving_since(rig, since: float) -> float | None:
    """Wall time of the first target change after ``since`` (None: none yet)."""
    samples = rig.targets_since(since)
    for (_, a), (t, b) in zip(samples, samples[1:], strict=False):
        if np.max(np.abs(b - a)) > MOVING:
            return t
    return None


def _wait_moving(rig, since: float = -math.inf, timeout: float = 10.0) -> float | None:
    found = []
    wait_until(lambda: found.append(_moving_since(rig, since)) or found[-1] is not None,
               timeout, 0.01)
    return found[-1] if found else None


def _settle(rig, seconds=0.6) -> None:
    start = wall_time()
    _wait_moving(rig, since=start, timeout=10.0)
    time.sleep(max(0.0, seconds - (wall_time() - start)))


def _measure(rig, fault_time, hold_for):
    wait_until(lambda: joint_stop(rig.targets_since(fault_time), fault_time)[0] is not None,
               hold_for + 3.0, 0.01)
    time.sleep(hold_for)
    return joint_stop(rig.targets_since(fault_time), fault_time, fault_end=wall_time())


def _joint_speed(rig, before: float) -> float:
    """Fastest joint's mean speed [rad/s] over the two control periods before ``before``."""
    samples = [(t, q) for t, q in rig.collect() if before - STILL_WINDOW <= t < before]
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return 0.0
    (t0, q0), (t1, q1) = samples[0], samples[-1]
    return float(np.max(np.abs(q1 - q0)) / (t1 - t0))


def _result(rig, fault, detected_by, timeout, target, fault_time, measured, clear, reason=''):
    stop, moved = measured
    reason = reason or rig.status_message()
    cleared = wall_time()
    clear()
    resumed = _wait_moving(rig, since=cleared)
    return FaultResult(
        fault=fault, detected_by=detected_by, detect_timeout_s=timeout, target_s=target,
        stop_latency_s=None if stop is None else stop - fault_time,
        speed_at_fault=_joint_speed(rig, fault_time), held_until_cleared=not moved,
        recovered=resumed is not None,
        recovery_s=None if resumed is None else resumed - cleared, reason=reason,
        notes={'interface': 'joint_position'})


def _inference_target(timeout: float) -> float:
    return timeout + 1.0 / CONTROL_RATE_HZ + 1.0 / DRIVER_RATE_HZ


def run_joint_node_faults(context, hold_for: float = 0.4, repeats: int = 1) -> FaultRun:
    """Policy faults, camera stop and e-stop on the joint-space rig.

    ``FaultRun.applied_twists_checked`` counts the joint targets checked here;
    ``speed_at_fault`` is the fastest joint's mean speed [rad/s] just before the fault.
    """
    rig = JointNodeRig(context)
    results = []
    try:
        if _wait_moving(rig, timeout=20.0) is None:
            raise RuntimeError(f'the joint rig never moved: {rig.status_message()!r}')
        switch = PolicyFaultSwitch(rig.inference.engine.policy)
        for _ in range(repeats):
            for mode in ('raise', 'nan', 'wrong_shape', 'hang'):
                _settle(rig)
                seen = len(switch.fault_times)
                switch.inject(mode)
                if not wait_until(lambda s=seen: len(switch.fault_times) > s, 5.0):
                    switch.clear()
                    raise RuntimeError(f'policy fault {mode!r} never fired')
                fault_time = switch.fault_times[seen]
                timeout = INFERENCE_TIMEOUT if mode == 'hang' else 0.0
                results.append(_result(
                    rig, f'joint_policy_{mode}', 'inference node', timeout,
                    _inference_target(timeout), fault_time,
                    _measure(rig, fault_time, hold_for), switch.clear))
            _settle(rig)
            rig.camera_on = False
            time.sleep(0.001)
            fault_time = rig.last_frame_time + 1.0 / CAMERA_HZ
            timeout = STALE_IMAGE_TIMEOUT - 1.0 / CAMERA_HZ
            results.append(_result(
                rig, 'joint_camera_stopped', 'inference node', timeout, _inference_target(timeout),
                fault_time, _measure(rig, fault_time, hold_for),
                lambda: setattr(rig, 'camera_on', True)))
            _settle(rig)
            fault_time = wall_time()
            rig.call(rig.estop)
            results.append(_result(
                rig, 'joint_estop_service', 'driver', 0.0, 1.0 / DRIVER_RATE_HZ, fault_time,
                _measure(rig, fault_time, hold_for), lambda: rig.call(rig.clear_estop),
                reason='e-stop engaged (service); includes the service round trip'))
        rig.collect()
        run = FaultRun(results, len(rig.unsafe), rig.checked, rig.unsafe[:3])
    finally:
        rig.close()
    return run
