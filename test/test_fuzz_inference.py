"""Fuzzed input into the inference node through a real graph (hypothesis).

Every subscriber (raw and compressed images, instruction, joint states) and every writable
parameter gets malformed data. Each case must be accepted when an independent rule says it
is valid, or refused with a stated reason; the node must keep spinning; and no command
outside the configured limits may reach cmd/ee_twist or the driver behind it (a dry-run
driver checks acceleration and workspace as well). Case counts are printed per test.
"""


import pytest
from hypothesis import given, settings

from vla_ros.reliability import fuzz

pytestmark = [pytest.mark.graph]

FAST = fuzz.FUZZ_SETTINGS




@pytest.fixture(scope='module')
def harness(module_ros_context):
    h = fuzz.InferenceFuzzHarness(module_ros_context)
    try:
        h.instruct('move forward')
        assert h.wait_moving(), 'the harness never started moving'
        yield h
    finally:
        h.close()


def fuzz_target(h, kind, strategy, check, examples=60):
    """Run ``check`` on ``examples`` hypothesis cases; assert counts and safety after."""
    tried, rejected = h.cases[kind], h.rejected[kind]

    @settings(FAST, max_examples=examples)
    @given(case=strategy)
    def run(case):
        check(*case) if isinstance(case, tuple) else check(case)

    run()
    tried, rejected = h.cases[kind] - tried, h.rejected[kind] - rejected
    print(f'\nfuzz inference {kind}: {tried} cases, {rejected} refused with a reason, '
          f'{h.monitor.applied_checker.checked} applied twists checked')
    assert tried >= examples
    assert 0 < rejected < tried or kind == 'image' and rejected > 0
    assert h.monitor.audit() == []


def test_malformed_raw_images(harness):
    fuzz_target(harness, 'image', fuzz.raw_image_cases(), harness.check_raw_image)


def test_malformed_instructions(harness):
    fuzz_target(harness, 'instruction', fuzz.instruction_cases(), harness.check_instruction)
    harness.instruct('move forward')  # a good instruction is still followed
    assert harness.wait_moving()


def test_malformed_joint_states(harness):
    fuzz_target(harness, 'joint_states', fuzz.joint_state_cases(),
                harness.check_joint_states)


def test_parameters(harness):
    """Every writable parameter with values of every type; then defaults back, motion back."""
    harness._initial_values()
    fuzz_target(harness, 'parameter', fuzz.parameter_cases(harness.inference),
                harness.check_parameter, examples=150)
    harness.restore_defaults()
    harness.instruct('move forward')
    assert harness.wait_moving(), harness.monitor.last_message()


def test_malformed_compressed_images(module_ros_context):
    h = fuzz.InferenceFuzzHarness(module_ros_context, 'fuzz_compressed', 'compressed')
    try:
        h.instruct('move forward')
        assert h.wait_moving()
        fuzz_target(h, 'compressed', fuzz.compressed_cases(), h.check_compressed)
        assert h.wait_moving()  # still driving on the good stream
    finally:
        h.close()


def test_rejected_input_is_reported_in_status(harness):
    """A reason reaches vla/status, not only the log."""
    from sensor_msgs.msg import Image

    harness.image_pub.publish(Image(height=4, width=4, encoding='rgb8', step=12, data=b'x'))
    assert fuzz.wait_until(lambda: 'data has 1 bytes' in harness.monitor.last_message(), 3.0)
    assert "rejected input: camera 'front'" in harness.monitor.last_message()
