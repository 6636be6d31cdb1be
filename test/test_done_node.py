"""The inference node when the policy says "done": cmd/terminate, STATE_DONE, hold."""

import time

import pytest
from test_inference_node import Harness, moving  # noqa: F401 - shared graph harness

pytestmark = [pytest.mark.graph]


@pytest.fixture
def harness(ros_context):
    import json

    h = Harness(ros_context, policy_params=json.dumps(
        {'chunk_length': 8, 'image_size': [64, 48], 'action_space': 'arm7_done'}))
    yield h
    h.close()


def test_done_publishes_terminate_reports_done_and_holds_until_new_instruction(harness):
    from std_msgs.msg import Bool
    from vla_ros_msgs.msg import PolicyStatus

    from vla_ros.nodes import qos

    h = harness
    terminates = []
    h.peer.create_subscription(Bool, 'cmd/terminate', terminates.append, qos.COMMAND)
    h.instruct('move forward')
    assert h.wait_for(lambda: moving(h)), h.message()
    assert not terminates
    h.instruct('move forward and finish')
    assert h.wait_for(lambda: h.state() == PolicyStatus.STATE_DONE), h.message()
    assert h.last_status().instruction == 'move forward and finish'
    assert "'move forward and finish' complete" in h.message()
    assert [m.data for m in terminates] == [True]  # once, on the tick the policy said so
    time.sleep(0.5)  # it holds: zero twists, no second terminate
    assert all(m.twist.linear.x == 0.0 for t, m in h.twists[-5:])
    assert len(terminates) == 1 and h.state() == PolicyStatus.STATE_DONE
    h.instruct('move forward')
    assert h.wait_for(lambda: moving(h) and h.state() == PolicyStatus.STATE_RUNNING), \
        h.message()
