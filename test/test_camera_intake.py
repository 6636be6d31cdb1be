"""Camera frames taken on their own thread, never by the executor (nodes.camera_intake)."""

import threading
import time

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
from std_msgs.msg import String
from test_driver_node import wait_for

from vla_ros.nodes import qos
from vla_ros.nodes.camera_intake import CameraIntake
from vla_ros.nodes.image_cdr import read_image
from vla_ros.nodes.image_conversion import image_msg_to_rgb, rgb_to_image_msg

pytestmark = [pytest.mark.graph]


def test_frames_reach_the_handler_on_the_intake_thread_and_not_the_executor(ros_context):
    import rclpy

    node = rclpy.create_node('intake_test', context=ros_context)
    source = rclpy.create_node('intake_source', context=ros_context)
    frames, threads, strings = [], [], []

    def on_frame(data):
        threads.append(threading.current_thread().name)
        frames.append(image_msg_to_rgb(read_image(data)))
        if len(frames) == 2:
            raise ValueError('a bad frame')  # must not end the intake

    errors = []
    intake = CameraIntake(node, on_error=errors.append)
    intake.subscribe(Image, 'camera/front/image_raw', on_frame, qos.SENSOR, raw=True)
    node.create_subscription(String, 'chatter', lambda m: strings.append(m.data), 10)
    intake.start()
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin():  # stopped by the flag: shutting the executor down mid-spin races in rclpy
        while spinning.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    images = source.create_publisher(Image, 'camera/front/image_raw', qos.SENSOR)
    chatter = source.create_publisher(String, 'chatter', 10)
    try:
        assert wait_for(lambda: images.get_subscription_count() > 0
                        and chatter.get_subscription_count() > 0, 10.0)
        rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8)
        for i in range(5):
            images.publish(rgb_to_image_msg(rgb, stamp=float(i + 1)))
            chatter.publish(String(data=str(i)))
            time.sleep(0.05)
        assert wait_for(lambda: len(frames) >= 4 and len(strings) >= 4, 10.0)
        np.testing.assert_array_equal(frames[0], rgb)
        assert set(threads) == {'vla-camera-intake'}  # never the executor's thread
        assert [type(e) for e in errors] == [ValueError]
    finally:
        intake.stop()
        assert not intake._thread.is_alive()
        spinning.clear()
        spinner.join(5.0)
        executor.shutdown()
        node.destroy_node()
        source.destroy_node()


def test_stop_without_frames_returns_promptly(ros_context):
    import rclpy

    node = rclpy.create_node('intake_idle', context=ros_context)
    try:
        intake = CameraIntake(node)
        intake.subscribe(Image, 'camera/none/image_raw', lambda m: None, qos.SENSOR, raw=True)
        intake.start()
        time.sleep(0.2)
        started = time.monotonic()
        intake.stop()
        assert time.monotonic() - started < 1.0 and not intake._thread.is_alive()
    finally:
        node.destroy_node()
