"""Run one node until shutdown: the ``main()`` shared by vla_ros's node executables."""

import signal
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from vla_ros.dds import apply_default_profile


class _InterruptRecorder:
    """Python-level SIGINT handler that remembers the signal, then raises KeyboardInterrupt.

    rclpy's own handler chains to the Python one, so installing this before
    ``rclpy.init`` keeps rclpy's shutdown behaviour and adds a record of the Ctrl-C.
    """

    def __init__(self):
        self.received = False

    def __call__(self, signum, frame):
        self.received = True
        signal.default_int_handler(signum, frame)

    def record_only(self, signum, frame):
        """During shutdown: note a Ctrl-C, raise nothing (the cleanup must finish)."""
        self.received = True


def spin_node(node_factory, args=None) -> None:
    """Init rclpy, build the node, spin it on one thread, shut down cleanly.

    Every callback of vla_ros's nodes is short (policies run in their own threads), so a
    single-threaded executor serves them; rclpy's multi-threaded executor busy-waits and
    missed a 50 Hz loop in our tests (ros2/rclpy#1223, #1452). Callback groups still keep
    the nodes correct when they are composed into a multi-threaded process.
    """
    interrupt = _InterruptRecorder()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt)
    apply_default_profile()  # before rclpy.init: Fast DDS reads it when it starts
    rclpy.init(args=args)
    node = None
    try:
        node = node_factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # A Ctrl-C that lands while rclpy converts a taken message to Python surfaces as
        # pybind11's "Unable to convert call argument '0' to Python object", sometimes
        # before rclpy has shut the context down (seen in the end-to-end demo test). That
        # is a shutdown, not a failure; a RuntimeError with no Ctrl-C behind it is real.
        if rclpy.ok() and not interrupt.received:
            raise
    finally:
        # rclpy shuts the context down on SIGINT and then hands the signal to Python's
        # handler, which may run only now: a KeyboardInterrupt here would cut short the
        # node's cleanup (the driver's stop command) and exit by the signal (-2). From
        # here on a Ctrl-C is only noted.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, interrupt.record_only)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
