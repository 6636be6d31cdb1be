"""Run one node until shutdown: the ``main()`` shared by vla_ros's node executables."""

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def spin_node(node_factory, args=None) -> None:
    """Init rclpy, build the node, spin it on one thread, shut down cleanly.

    Every callback of vla_ros's nodes is short (policies run in their own threads), so a
    single-threaded executor serves them; rclpy's multi-threaded executor busy-waits and
    missed a 50 Hz loop in our tests (ros2/rclpy#1223, #1452). Callback groups still keep
    the nodes correct when they are composed into a multi-threaded process.
    """
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
        # Ctrl-C can invalidate the context while the executor is taking a message; that
        # is a shutdown, not a failure. Anything else is a real error.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
