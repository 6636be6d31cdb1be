"""Fuzzed cmd/joint messages into a joint-position driver through a real graph (hypothesis).

NaN/Inf, huge jumps, wrong / missing / duplicate names, wrong lengths, a velocity array,
stale and future stamps: each case is accepted when valid or dropped with a reason, and
no joint target outside the limits or larger than one step per tick reaches the backend.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings

from vla_ros.reliability import fuzz
from vla_ros.reliability.fuzz_joints import (
    JOINT_NAMES,
    JointCommandCase,
    JointDriverFuzzHarness,
    joint_command_cases,
)

pytestmark = [pytest.mark.graph]


@pytest.fixture(scope='module')
def harness(module_ros_context):
    h = JointDriverFuzzHarness(module_ros_context)
    try:
        yield h
    finally:
        h.close()


def test_validity_rule():
    good = JointCommandCase(JOINT_NAMES[::-1], (0.0,) * 7, (), None)
    assert good.valid()
    assert not JointCommandCase(JOINT_NAMES[:6], (0.0,) * 6, (), None).valid()
    assert not JointCommandCase(JOINT_NAMES, (0.0,) * 6 + (math.nan,), (), None).valid()
    assert not JointCommandCase(JOINT_NAMES, (0.0,) * 7, (0.0,), None).valid()
    assert not JointCommandCase(JOINT_NAMES, (0.0,) * 7, (), 1.0).valid()
    assert JointCommandCase(JOINT_NAMES, (1e300,) * 7, (), -3.0).valid()  # clamped, fresh


def test_checker_flags_a_target_outside_the_limits_or_a_jump(harness):
    """Negative control: the backend check catches what it must."""
    harness.assert_backend_safe('before the control')
    last = harness.last_sent
    with harness.driver._sent_lock:
        harness.driver._sent_joints.append((0.0, np.full(7, 9.0), None, 1.0))
    with pytest.raises(fuzz.FuzzFailure, match='outside the joint limits'):
        harness.assert_backend_safe('control')
    harness.last_sent = np.array(last)
    jump = np.array(last) + 0.5
    jump[3] = -1.0  # keep joint4 within its range: only the step is wrong
    with harness.driver._sent_lock:
        harness.driver._sent_joints.append((0.0, np.clip(jump, -2.5, 2.5), None, 1.0))
    with pytest.raises(fuzz.FuzzFailure, match='jumped'):
        harness.assert_backend_safe('control')
    harness.last_sent = None  # the fake sample is not the backend's last target


def test_joint_commands(harness):
    tried, rejected = harness.cases['joint'], harness.rejected['joint']

    @settings(fuzz.FUZZ_SETTINGS, max_examples=60)
    @given(case=joint_command_cases())
    def run(case):
        harness.check_joint_command(case)

    run()
    tried, rejected = harness.cases['joint'] - tried, harness.rejected['joint'] - rejected
    print(f'\nfuzz joint driver: {tried} cases, {rejected} refused with a reason, '
          f'{harness.checked} joint targets checked')
    assert tried >= 60 and 0 < rejected < tried
    assert harness.checked > 0


def test_huge_jump_moves_one_step_per_tick_then_holds(harness):
    harness.assert_backend_safe('before')
    case = JointCommandCase(JOINT_NAMES, (1e6,) * 7, (), None)
    t0 = fuzz.wall_time()
    while fuzz.wall_time() < t0 + 0.3:
        harness.check_joint_command(case)
    assert harness.checked > 0
    harness.check_hold_after_stop()
