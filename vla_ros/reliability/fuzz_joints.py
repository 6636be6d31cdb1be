"""Fuzzed ``cmd/joint`` messages into a joint-position driver through a real graph.

The twin of :class:`vla_ros.reliability.fuzz.DriverFuzzHarness` for joint-space robots
(docs/joint_space.md): a dry-run driver with ``command_interface:=joint_position`` gets
JointState commands with NaN/Inf/huge positions, wrong, missing, duplicate and shuffled
names, wrong lengths, a velocity array, stale and future stamps. Every case must be
accepted when an independent validity rule says it is valid, or rejected with a reason;
every joint command the backend receives must lie within the joint limits and move each
joint by at most ``joint_max_step`` per tick; the node must keep ticking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from vla_ros.reliability.fuzz import _Harness, _require, wild_float
from vla_ros.reliability.graph import ObservedDriverNode, wait_until, wall_time
from vla_ros.reliability.invariants import Envelope

# The dry run's 7-joint arm, commanded in a shuffled order, with limits inside its ranges.
JOINT_NAMES = ('joint3', 'joint1', 'joint2', 'joint4', 'joint5', 'joint6', 'joint7')
POSITION_MIN = (-2.5, -2.5, -1.5, -2.9, -2.5, 0.1, -2.5)
POSITION_MAX = (2.5, 2.5, 1.5, -0.2, 2.5, 3.5, 2.5)
MAX_VELOCITY = (1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0)
MAX_STEP = 0.02
WATCHDOG = 0.25
# Stamp ages [s] a case is sent with (None: unstamped; negative: from the future). Far
# from the watchdog timeout, so transit time cannot make a case ambiguous.
STAMP_AGES = (None, 0.0, 0.05, -3.0, 1.0, 100.0)


@dataclass(frozen=True)
class JointCommandCase:
    """One cmd/joint message: names, positions, velocities, stamp age (None: unstamped)."""

    names: tuple
    positions: tuple
    velocities: tuple
    stamp_age: float | None

    def valid(self) -> bool:
        """Independent rule: each configured joint named once, finite positions, fresh."""
        if sorted(self.names) != sorted(JOINT_NAMES):
            return False
        if len(self.positions) != len(self.names) or self.velocities:
            return False
        if not all(math.isfinite(v) for v in self.positions):
            return False
        return self.stamp_age is None or self.stamp_age <= WATCHDOG


@st.composite
def joint_command_cases(draw) -> JointCommandCase:
    """Shuffled, missing, unknown and duplicate names; any lengths and values; odd stamps."""
    names = list(draw(st.permutations(JOINT_NAMES)))
    mutation = draw(st.sampled_from(['none', 'none', 'none', 'drop', 'unknown', 'duplicate']))
    if mutation == 'drop':
        names.pop(draw(st.integers(0, len(names) - 1)))
    elif mutation == 'unknown':
        names[draw(st.integers(0, len(names) - 1))] = draw(st.sampled_from(
            ['finger_left', 'joint8', '', 'JOINT1', 'joint1 ']))
    elif mutation == 'duplicate':
        names[0] = names[1]
    count = draw(st.one_of(st.just(len(names)), st.just(len(names)),
                           st.integers(0, len(names) + 2)))
    value = st.one_of(st.floats(-3.5, 3.5), st.floats(-3.5, 3.5), wild_float)
    positions = draw(st.lists(value, min_size=count, max_size=count))
    velocities = draw(st.one_of(st.just([]), st.just([]), st.just([]),
                                st.lists(wild_float, min_size=1, max_size=8)))
    age = draw(st.sampled_from(STAMP_AGES))
    return JointCommandCase(tuple(names), tuple(positions), tuple(velocities), age)


class JointDriverFuzzHarness(_Harness):
    """A dry-run driver in ``joint_position`` mode, fed fuzzed cmd/joint messages."""

    def __init__(self, context, namespace: str = 'fuzz_joint_driver'):
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import JointState

        from vla_ros.nodes import qos

        driver = ObservedDriverNode(context=context, namespace=namespace, parameter_overrides=[
            Parameter(name, value=value) for name, value in {
                'backend': 'dry_run', 'camera_rate_hz': 0.0, 'watchdog_timeout': WATCHDOG,
                'command_interface': 'joint_position', 'joint_names': list(JOINT_NAMES),
                'joint_position_min': list(POSITION_MIN),
                'joint_position_max': list(POSITION_MAX),
                'joint_max_velocity': list(MAX_VELOCITY),
                'joint_max_step': [MAX_STEP]}.items()])
        self._start_common(context, namespace, Envelope.from_limits(driver.limits, False),
                           driver, watch_commands=False)
        self.joint_pub = self.peer.create_publisher(JointState, 'cmd/joint', qos.COMMAND)
        self.graph.add(self.peer)
        self.last_sent = None  # the previous joint target the backend got
        self.checked = 0  # joint commands checked against the limits
        _require(wait_until(lambda: self.joint_pub.get_subscription_count() > 0
                            and self.monitor.latest_applied() is not None, 10.0),
                 'joint driver not discovered')

    def assert_backend_safe(self, what: str) -> None:
        """Every joint target sent: finite, within the limits, at most one step per tick."""
        lower, upper = np.array(POSITION_MIN), np.array(POSITION_MAX)
        for _, positions, velocities, gripper in self.driver.take_sent_joints():
            _require(velocities is None and positions is not None,
                     f'{what}: backend got velocities {velocities}')
            _require(bool(np.all(np.isfinite(positions))), f'{what}: non-finite {positions}')
            _require(bool(np.all((positions >= lower) & (positions <= upper))),
                     f'{what}: target outside the joint limits {positions.tolist()}')
            if self.last_sent is not None:
                step = float(np.max(np.abs(positions - self.last_sent)))
                _require(step <= MAX_STEP + 1e-9, f'{what}: target jumped {step:.4f} rad '
                         f'(> joint_max_step {MAX_STEP})')
            _require(math.isfinite(gripper) and 0.0 <= gripper <= 1.0,
                     f'{what}: backend got gripper {gripper}')
            self.last_sent = positions
            self.checked += 1

    def check_joint_command(self, case: JointCommandCase) -> None:
        """One cmd/joint message: accepted if valid, else dropped with a reason; safe."""
        from sensor_msgs.msg import JointState

        tag = self.next_tag()
        msg = JointState(name=list(case.names), position=[float(v) for v in case.positions],
                         velocity=[float(v) for v in case.velocities])
        msg.header.frame_id = tag

        def publish():
            if case.stamp_age is not None:  # fresh per attempt
                now = self.peer.get_clock().now().nanoseconds * 1e-9 - case.stamp_age
                msg.header.stamp.sec = int(math.floor(now))
                msg.header.stamp.nanosec = int((now - math.floor(now)) * 1e9) % 1_000_000_000
            self.joint_pub.publish(msg)

        record = self._processed(self.driver, 'joint', tag, publish)
        self._count('joint', record)
        what = (f'cmd/joint names={list(case.names)} positions={list(case.positions)[:8]} '
                f'velocities={list(case.velocities)[:3]} age={case.stamp_age}')
        if case.valid():
            _require(not record.reasons, f'{what}: valid command dropped: {record.reasons}')
        else:
            _require(bool(record.reasons) and
                     record.reasons[0].startswith('dropping command: cmd/joint'),
                     f'{what}: invalid command without a clear reason: {record.reasons}')
        self.assert_healthy(what)
        self.assert_backend_safe(what)

    def check_hold_after_stop(self, seconds: float = 0.4) -> None:
        """Past the watchdog, the target the backend gets must not change."""
        wait_until(lambda: False, WATCHDOG + 0.1)
        self.assert_backend_safe('before hold')
        t0 = wall_time()
        wait_until(lambda: False, seconds)
        sent = [p for when, p, _, _ in self.driver.take_sent_joints() if when >= t0]
        _require(len(sent) >= 3, f'driver stopped ticking: {len(sent)} joint commands')
        _require(all(np.array_equal(p, sent[0]) for p in sent),
                 'joint target moved without commands (watchdog)')
        self.last_sent = sent[-1]
