"""The driver's safety decisions as pure logic: no rclpy, an injected clock, easy to test.

:class:`DriverCore` decides, on every control tick, what may reach the robot backend. Its
rules, each tested with a fake clock in ``test/test_driver_core.py``:

* **Watchdog.** An arm twist is applied only while the newest one is at most
  ``watchdog_timeout`` old; a base twist likewise. Older means a zero twist (hold still).
* **Stale stamps.** A command counts as sent at its header stamp if that is older than its
  arrival, so one delayed in transit runs for less; one stamped more than
  ``watchdog_timeout`` ago is rejected outright. A zero stamp means "sent on arrival".
* **Non-finite commands** (NaN, Inf, wrong shape) are rejected, never clamped into a value.
* **E-stop latch.** Once engaged, nothing but :meth:`DriverCore.clear_estop` releases it;
  commands received while engaged are dropped when it clears.
* **Actuation interlock and lifecycle gate.** Motion needs both the operator's interlock
  (``~/enable``) and the node's lifecycle state (active). While either is off nothing
  moves; turning it on requires a fresh arm command sent after it (a queued one must not
  jump the robot into motion).
* **Limits.** Arm twists are clamped to the velocity, acceleration and workspace limits
  (:func:`vla_ros.actions.safety.apply_arm_limits`) with the measured tick period; base
  twists to the base speed limits. The limits are a user's configuration: nothing here
  ever loosens them.
* **Gripper.** Targets are clamped to 0..1; a new target takes effect only while motion is
  allowed (the last allowed target is held otherwise).
* **Joint mode** (``command_interface`` ``joint_position`` / ``joint_velocity``,
  docs/joint_space.md; tested in ``test/test_driver_core_joints.py``). Joint commands
  (:meth:`DriverCore.command_joints`) are reordered by name; unknown, missing or duplicate
  names, wrong lengths, non-finite values or an array for the other interface reject the
  message (the previous good command stays). Stamps, watchdog, e-stop, interlock and
  lifecycle rules are those of twists. Position targets are clamped to the joint limits
  and the applied target steps toward them by at most ``min(max_step, max_velocity *
  dt)`` (:mod:`vla_ros.drivers.joint_rules`); velocities are clamped and zeroed where they
  would cross a limit within the tick. While motion is not allowed or the watchdog has
  tripped the last applied target is held (velocities: zero); when motion is allowed
  again the applied target restarts from the measured positions.

Stops are immediate (no deceleration ramp): an e-stop or watchdog must not be lengthened.
The node (``vla_ros.nodes.driver_node``) is a thin adapter: ROS callbacks call the
``command_*`` / ``engage_estop`` / ``set_*`` methods, a timer calls :meth:`DriverCore.tick`
and sends :class:`DriverOutput` to the backend. Input methods may run on other threads than
:meth:`DriverCore.tick`; a lock guards the state they share.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from vla_ros.actions.safety import (
    SafetyLimits,
    UnsafeCommandError,
    apply_arm_limits,
    check_finite,
    limit_base,
)
from vla_ros.drivers.joint_rules import (
    COMMAND_INTERFACES,
    JointLimits,
    limit_joint_velocity,
    limit_position_target,
)

__all__ = ['DriverCore', 'DriverOutput', 'DriverStatus', 'resolve_actuation_enabled']

_MIN_DT = 1e-4  # s: a tick measured shorter counts as this long
_MAX_DT_PERIODS = 3.0  # a late tick counts as at most this many periods


def resolve_actuation_enabled(user_value: Optional[bool], is_hardware: bool) -> bool:
    """The interlock's initial state: the user's setting if given, else off for hardware.

    Real motors never move before someone has deliberately enabled them; simulators and
    dry runs start enabled.
    """
    return (not is_hardware) if user_value is None else bool(user_value)


@dataclass(frozen=True)
class DriverOutput:
    """What one tick sends to the backend, and what changed.

    ``base_twist`` is None for a backend without a mobile base. ``watchdog_changed`` is
    None, or the new watchdog state (True = just tripped) when it changed on this tick.
    ``limit_reasons`` says why the arm twist (or joint command) differs from the request
    (empty if it does not). In joint mode ``joint_positions`` (``joint_position``) or
    ``joint_velocities`` (``joint_velocity``) holds the command in ``joint_names`` order
    and ``ee_twist`` is zero; both are None in twist mode.
    """

    ee_twist: np.ndarray
    gripper: float
    base_twist: Optional[np.ndarray]
    dt: float
    watchdog_changed: Optional[bool] = None
    limit_reasons: tuple = ()
    joint_positions: Optional[np.ndarray] = None
    joint_velocities: Optional[np.ndarray] = None


@dataclass(frozen=True)
class DriverStatus:
    """A snapshot for diagnostics; ``level`` is 'ok', 'warn' or 'error'."""

    estop: bool
    actuation_enabled: bool
    watchdog_tripped: bool
    clamped_count: int
    rejected_count: int
    active: bool = True

    @property
    def level(self) -> str:
        """Diagnostic level: an e-stop is an error, a disabled interlock a warning."""
        if self.estop:
            return 'error'
        return 'warn' if not (self.actuation_enabled and self.active) else 'ok'

    @property
    def message(self) -> str:
        """One line for humans."""
        if self.estop:
            return 'e-stop engaged'
        if not self.active:
            return 'inactive (lifecycle)'
        if not self.actuation_enabled:
            return 'actuation disabled'
        return 'idle (watchdog: no commands)' if self.watchdog_tripped else 'commands flowing'


class DriverCore:
    """Watchdog, e-stop latch, interlock, stale-stamp and limit rules; see the module doc.

    ``clock`` returns the current time in seconds (the node passes its ROS clock, tests a
    fake one); command stamps are seconds on the same clock, or None / 0 for "unstamped".
    """

    def __init__(self, clock: Callable[[], float], limits: SafetyLimits, *,
                 period: float, watchdog_timeout: float, enabled: bool,
                 supports_base: bool = False, initial_gripper: float = 1.0,
                 active: bool = True, command_interface: str = 'ee_twist',
                 joint_limits: Optional[JointLimits] = None):
        if not (math.isfinite(period) and period > 0.0):
            raise ValueError(f'period must be finite and > 0, got {period!r}')
        if command_interface not in COMMAND_INTERFACES:
            raise ValueError(f'command_interface must be one of {COMMAND_INTERFACES}, got '
                             f'{command_interface!r}')
        if command_interface != 'ee_twist' and not isinstance(joint_limits, JointLimits):
            raise ValueError(f'command_interface {command_interface!r} needs JointLimits, '
                             f'got {joint_limits!r}')
        self.command_interface = command_interface
        self._joint_limits = joint_limits if command_interface != 'ee_twist' else None
        self._clock = clock
        self._period = float(period)
        self.supports_base = bool(supports_base)
        self._lock = threading.Lock()
        # Configuration (each replaced by one reference swap).
        self._limits = self._check_limits(limits)
        self._timeout = self._check_timeout(watchdog_timeout)
        # Inputs, shared with the input threads (under the lock).
        self._enabled = bool(enabled)
        self._active = bool(active)
        self._estop = False
        self._ee_cmd: Optional[np.ndarray] = None
        self._ee_sent: Optional[float] = None
        self._base_cmd: Optional[np.ndarray] = None
        self._base_sent: Optional[float] = None
        self._gripper_cmd: Optional[float] = None
        self._joint_cmd: Optional[np.ndarray] = None
        self._joint_sent: Optional[float] = None
        self._rejected = 0
        # Tick state (only touched by tick()).
        self._applied = np.zeros(6)
        self._gripper_target = float(np.clip(initial_gripper, 0.0, 1.0))
        self._last_tick: Optional[float] = None
        self._watchdog_tripped = True
        self._clamped = 0
        # Joint mode: the position target last sent (None: restart from the measured
        # positions on the next tick that may move).
        self._joint_applied: Optional[np.ndarray] = None
        self._reseed = True

    # ------------------------------------------------------------------ configuration
    @property
    def period(self) -> float:
        """The nominal tick period [s]."""
        return self._period

    @property
    def limits(self) -> SafetyLimits:
        """The limits in force."""
        return self._limits

    @property
    def joint_limits(self) -> Optional[JointLimits]:
        """The joint limits in force (None in twist mode)."""
        return self._joint_limits

    @property
    def joint_mode(self) -> bool:
        """Whether the arm is commanded in joint space."""
        return self._joint_limits is not None

    @property
    def watchdog_timeout(self) -> float:
        """Seconds an arm or base command stays valid."""
        return self._timeout

    def set_limits(self, limits: SafetyLimits) -> None:
        """Replace the limits; the next tick uses them."""
        self._limits = self._check_limits(limits)

    def set_joint_limits(self, limits: JointLimits) -> None:
        """Replace the joint limits (same joint names); the next tick uses them."""
        if not self.joint_mode:
            raise ValueError('the driver is in ee_twist mode: it has no joint limits')
        if not isinstance(limits, JointLimits) or limits.names != self._joint_limits.names:
            raise ValueError('joint limits must be JointLimits for the same joint_names '
                             f'{list(self._joint_limits.names)}')
        self._joint_limits = limits

    def set_watchdog_timeout(self, seconds: float) -> None:
        """Replace the watchdog timeout (> 0, finite)."""
        self._timeout = self._check_timeout(seconds)

    @staticmethod
    def _check_limits(limits):
        if not isinstance(limits, SafetyLimits):
            raise TypeError(f'limits must be SafetyLimits, got {type(limits).__name__}')
        return limits

    @staticmethod
    def _check_timeout(seconds):
        seconds = float(seconds)
        if not (math.isfinite(seconds) and seconds > 0.0):
            raise ValueError(f'watchdog_timeout must be finite and > 0, got {seconds!r}')
        return seconds

    # ------------------------------------------------------------------ safety inputs
    @property
    def estop_engaged(self) -> bool:
        """Whether the e-stop latch is engaged."""
        return self._estop

    @property
    def actuation_enabled(self) -> bool:
        """Whether the actuation interlock lets commands through."""
        return self._enabled

    @property
    def active(self) -> bool:
        """Whether the lifecycle gate lets commands through."""
        return self._active

    def set_active(self, active: bool) -> bool:
        """Set the lifecycle gate; True if it changed. Any pending arm command is dropped."""
        active = bool(active)
        with self._lock:
            changed = active != self._active
            self._active = active
            self._ee_cmd = self._joint_cmd = None
        return changed

    def engage_estop(self) -> bool:
        """Engage the latch; True if it was not engaged before."""
        with self._lock:
            was, self._estop = self._estop, True
        return not was

    def clear_estop(self) -> bool:
        """Release the latch and drop commands received meanwhile; True if it was engaged."""
        with self._lock:
            was, self._estop = self._estop, False
            self._ee_cmd = self._joint_cmd = None
            self._base_cmd = None
        return was

    def set_enabled(self, enabled: bool) -> bool:
        """Set the interlock; True if it changed. Any pending arm command is dropped."""
        enabled = bool(enabled)
        with self._lock:
            changed = enabled != self._enabled
            self._enabled = enabled
            # Require a command sent after enabling, not one queued while disabled.
            self._ee_cmd = self._joint_cmd = None
        return changed

    # ------------------------------------------------------------------ commands
    def command_ee_twist(self, twist: Sequence[float], stamp: Optional[float] = None,
                         what: str = 'cmd/ee_twist') -> Optional[str]:
        """Store an arm twist ``[vx, vy, vz, wx, wy, wz]``; returns the rejection, or None."""
        if self.joint_mode:
            return self._reject(f'{what}: the driver takes {self.command_interface} commands '
                                '(cmd/joint), not end-effector twists')
        accepted = self._accept(twist, 6, stamp, what)
        if isinstance(accepted, str):
            return accepted
        value, sent = accepted
        with self._lock:
            self._ee_cmd, self._ee_sent = value, sent
        return None

    def command_base_twist(self, twist: Sequence[float], stamp: Optional[float] = None,
                           what: str = 'cmd_vel') -> Optional[str]:
        """Store a base twist given as a 6-vector (vx, vy, wz are used); returns the rejection.

        Without a base the command is ignored (returns None, not counted as a rejection;
        the node warns about it).
        """
        if not self.supports_base:
            return None
        accepted = self._accept(twist, 6, stamp, what)
        if isinstance(accepted, str):
            return accepted
        value, sent = accepted
        with self._lock:
            self._base_cmd, self._base_sent = value[[0, 1, 5]], sent  # planar: vx, vy, wz
        return None

    def command_gripper(self, position: float, max_effort: float = 0.0,
                        what: str = 'cmd/gripper') -> Optional[str]:
        """Store a gripper target (clamped to 0..1); returns why it was rejected, or None."""
        try:
            position, max_effort = float(position), float(max_effort)
        except (TypeError, ValueError):
            return self._reject(f'{what} is not numeric: {position!r}, {max_effort!r}')
        if not (math.isfinite(position) and math.isfinite(max_effort)):
            return self._reject(f'{what} is not finite: {position}, {max_effort}')
        with self._lock:
            self._gripper_cmd = min(max(position, 0.0), 1.0)
        return None

    def command_joints(self, names: Sequence[str], positions: Sequence[float] = (),
                       velocities: Sequence[float] = (), stamp: Optional[float] = None,
                       what: str = 'cmd/joint') -> Optional[str]:
        """Store a joint command (any joint order); returns the rejection, or None.

        ``positions`` for ``joint_position``, ``velocities`` for ``joint_velocity``; the
        other must be empty. Every configured joint must be named exactly once.
        """
        limits = self._joint_limits
        if limits is None:
            return self._reject(f'{what}: the driver takes ee_twist commands, not joints')
        try:
            names = [str(n) for n in names]
        except TypeError:
            return self._reject(f'{what}: names are not a list: {names!r}')
        duplicates = sorted({n for n in names if names.count(n) > 1})
        unknown = sorted(set(names) - set(limits.names))
        missing = [n for n in limits.names if n not in names]
        if duplicates or unknown or missing:
            problems = [f'{label} {items}' for label, items in (
                ('duplicate', duplicates), ('unknown', unknown), ('missing', missing))
                if items]
            return self._reject(f'{what}: joint names are wrong: {"; ".join(problems)} '
                                f'(expected {list(limits.names)})')
        wanted, other = ((positions, velocities) if self.command_interface == 'joint_position'
                         else (velocities, positions))
        field, other_field = (('position', 'velocity')
                              if self.command_interface == 'joint_position'
                              else ('velocity', 'position'))
        try:
            other_size = len(other)
        except TypeError:
            other_size = 1
        if other_size:
            return self._reject(f'{what}: {other_field} must be empty for '
                                f'{self.command_interface}, got {other_size} values')
        try:
            given = len(wanted)
        except TypeError:
            given = -1
        if given != len(names):
            return self._reject(f'{what}: {len(names)} names but {given} {field} values')
        accepted = self._accept(wanted, len(names), stamp, f'{what} {field}')
        if isinstance(accepted, str):
            return accepted
        value, sent = accepted
        order = [names.index(n) for n in limits.names]
        with self._lock:
            self._joint_cmd, self._joint_sent = value[order], sent
        return None

    def _accept(self, twist, size, stamp, what):
        try:
            value = check_finite(twist, what, size=size)
        except UnsafeCommandError as err:
            return self._reject(str(err))
        now = self._clock()
        if stamp is None or stamp == 0.0:
            return value, now
        age = now - float(stamp)
        if not math.isfinite(age):
            return self._reject(f'{what} has a non-finite stamp {stamp!r}')
        if age > self._timeout:
            return self._reject(f'{what} is stale: stamped {age:.3f} s ago '
                                f'(> watchdog_timeout {self._timeout:.3f} s)')
        # A stamp from the future (clock skew) counts as sent on arrival.
        return value, min(now, float(stamp))

    def _reject(self, why: str) -> str:
        with self._lock:
            self._rejected += 1
        return why

    # ------------------------------------------------------------------ control tick
    def tick(self, ee_position: Sequence[float], now: Optional[float] = None,
             joint_positions: Optional[Sequence[float]] = None) -> DriverOutput:
        """Decide this tick's command from the inputs and the measured EE position.

        ``now`` defaults to the clock; the node passes the time it stamps the tick's
        messages with, so the period it measures is the one observers see. In joint mode
        ``joint_positions`` (measured, in ``joint_names`` order) is required.
        """
        if self.joint_mode:
            return self._joint_tick(joint_positions, now)
        if now is None:
            now = self._clock()
        dt = self._tick_period(now)
        timeout, limits = self._timeout, self._limits
        with self._lock:
            allowed = self._enabled and self._active and not self._estop
            ee_cmd, ee_age = self._ee_cmd, self._age(self._ee_sent, now)
            base_cmd, base_age = self._base_cmd, self._age(self._base_sent, now)
            gripper_cmd = self._gripper_cmd

        fresh = ee_cmd is not None and ee_age <= timeout
        watchdog_changed = self._update_watchdog(fresh)
        reasons = ()
        if allowed and fresh:
            limited = apply_arm_limits(ee_cmd, self._applied, ee_position, dt, limits)
            twist = np.asarray(limited.twist, dtype=float)
            reasons = limited.reasons
            if limited.clamped:
                self._clamped += 1
        else:
            twist = np.zeros(6)
        if allowed and gripper_cmd is not None:
            self._gripper_target = gripper_cmd
        base = None
        if self.supports_base:
            base = np.zeros(3)
            if allowed and base_cmd is not None and base_age <= timeout:
                base = limit_base(base_cmd, limits)
        self._applied = twist
        return DriverOutput(twist, self._gripper_target, base, dt, watchdog_changed, reasons)

    def _joint_tick(self, joint_positions, now) -> DriverOutput:
        limits = self._joint_limits
        measured = np.asarray(joint_positions if joint_positions is not None else (), float)
        if measured.shape != (len(limits.names),) or not np.all(np.isfinite(measured)):
            raise ValueError(f'joint mode: measured joint_positions must be '
                             f'{len(limits.names)} finite values, got {measured.tolist()}')
        if now is None:
            now = self._clock()
        dt = self._tick_period(now)
        timeout = self._timeout
        with self._lock:
            allowed = self._enabled and self._active and not self._estop
            cmd, age = self._joint_cmd, self._age(self._joint_sent, now)
            base_cmd, base_age = self._base_cmd, self._age(self._base_sent, now)
            gripper_cmd = self._gripper_cmd

        fresh = cmd is not None and age <= timeout
        watchdog_changed = self._update_watchdog(fresh)
        reasons = ()
        positions = velocities = None
        if self._joint_applied is None or (allowed and self._reseed):
            # First tick, or motion allowed again: start from where the arm is.
            self._joint_applied = measured.copy()
        self._reseed = not allowed
        if self.command_interface == 'joint_position':
            if allowed and fresh:
                limited = limit_position_target(cmd, self._joint_applied, limits, dt)
                self._joint_applied = limited.values
                reasons = limited.reasons
                if limited.clamped:
                    self._clamped += 1
            positions = self._joint_applied.copy()
        else:
            velocities = np.zeros(len(limits.names))
            if allowed and fresh:
                limited = limit_joint_velocity(cmd, measured, limits, dt)
                velocities = limited.values
                reasons = limited.reasons
                if limited.clamped:
                    self._clamped += 1
        if allowed and gripper_cmd is not None:
            self._gripper_target = gripper_cmd
        base = None
        if self.supports_base:
            base = np.zeros(3)
            if allowed and base_cmd is not None and base_age <= timeout:
                base = limit_base(base_cmd, self._limits)
        return DriverOutput(np.zeros(6), self._gripper_target, base, dt, watchdog_changed,
                            reasons, positions, velocities)

    def stop_output(self, joint_positions: Optional[Sequence[float]] = None) -> DriverOutput:
        """The command to send when shutting down: zero motion, gripper held.

        In joint mode the position target is the last applied one (else the measured
        ``joint_positions``, if given); velocities are zero.
        """
        base = np.zeros(3) if self.supports_base else None
        positions = velocities = None
        if self.command_interface == 'joint_position':
            if self._joint_applied is not None:
                positions = self._joint_applied.copy()
            elif joint_positions is not None:
                positions = np.asarray(joint_positions, float).copy()
        elif self.command_interface == 'joint_velocity':
            velocities = np.zeros(len(self._joint_limits.names))
        return DriverOutput(np.zeros(6), self._gripper_target, base, self._period,
                            joint_positions=positions, joint_velocities=velocities)

    def _tick_period(self, now: float) -> float:
        """This tick's measured period, bounded, and remember ``now`` for the next one."""
        dt = self._period if self._last_tick is None else min(
            max(now - self._last_tick, _MIN_DT), _MAX_DT_PERIODS * self._period)
        self._last_tick = now
        return dt

    def _update_watchdog(self, fresh: bool) -> Optional[bool]:
        """Track the watchdog; the new state (True = tripped) when it changed, else None."""
        if (not fresh) == self._watchdog_tripped:
            return None
        self._watchdog_tripped = not fresh
        return self._watchdog_tripped

    @staticmethod
    def _age(sent, now):
        return math.inf if sent is None else now - sent

    # ------------------------------------------------------------------ status
    @property
    def watchdog_tripped(self) -> bool:
        """Whether the last tick found no fresh arm command (True before the first one)."""
        return self._watchdog_tripped

    def status(self) -> DriverStatus:
        """A consistent snapshot for diagnostics."""
        with self._lock:
            estop, enabled, rejected = self._estop, self._enabled, self._rejected
            active = self._active
        return DriverStatus(estop, enabled, self._watchdog_tripped, self._clamped, rejected,
                            active)
