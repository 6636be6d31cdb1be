"""A released-layout OpenVLA checkpoint through the inference node (real rclpy graph).

What ``vla-ros launch openvla_arm model_path:=DIR unnorm_key:=KEY dtype:=bfloat16`` runs:
the node loads the directory natively, resizes 640x480 camera frames the checkpoint's way
and publishes the chunk the policy predicts for them.
"""

import threading
import time

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

torch = pytest.importorskip('torch')

import openvla_reference as ref  # noqa: E402

pytestmark = [pytest.mark.graph, pytest.mark.slow]


def test_inference_node_runs_a_released_checkpoint(ros_context, tmp_path):
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from vla_ros_msgs.msg import ActionChunk

    from vla_ros.images import prepare_image
    from vla_ros.nodes import qos
    from vla_ros.nodes.image_conversion import rgb_to_image_msg
    from vla_ros.nodes.inference_node import InferenceNode
    from vla_ros.policies.contract import Observation
    from vla_ros.policies.openvla.policy import OpenVlaPolicy
    from vla_ros.policies.tokenizer import tokenizer_dir

    path = tmp_path / 'openvla-released'
    ref.write_released_directory(path, tokenizer_dir(), dtype=torch.bfloat16)
    node = InferenceNode(context=ros_context, parameter_overrides=[
        Parameter('policy', value='openvla'), Parameter('model_path', value=str(path)),
        Parameter('unnorm_key', value='bridge_orig'), Parameter('dtype', value='bfloat16'),
        Parameter('device', value='cpu'), Parameter('torch_threads', value=1),
        Parameter('control_rate_hz', value=10.0), Parameter('inference_rate_hz', value=5.0)])
    peer = rclpy.create_node('peer', context=ros_context)
    chunks = []
    peer.create_subscription(ActionChunk, 'vla/action_chunk', chunks.append, qos.STATUS)
    images = peer.create_publisher(Image, 'camera/front/image_raw', qos.SENSOR)
    instruction = peer.create_publisher(String, 'instruction', qos.INSTRUCTION)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)

    def publish():
        images.publish(rgb_to_image_msg(frame, stamp=peer.get_clock().now().nanoseconds * 1e-9))

    peer.create_timer(0.1, publish)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(peer)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(c.policy == 'openvla' for c in chunks):
            instruction.publish(String(data='put the carrot on the plate'))
            time.sleep(0.5)
        chunk = next((c for c in chunks if c.policy == 'openvla'), None)
        assert chunk is not None, 'no chunk from the released checkpoint within 90 s'
    finally:
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()
    policy = OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig', dtype='bfloat16')
    image = prepare_image(frame, policy.spec.image_size, method=policy.spec.image_resize)
    expected = policy.predict_chunk(Observation({'front': image}, 'put the carrot on the plate'))
    actions = np.asarray(chunk.actions, dtype=np.float32).reshape(chunk.horizon,
                                                                 chunk.action_dim)
    np.testing.assert_allclose(actions, expected, atol=1e-6)
