"""Run one node until shutdown: the ``main()`` shared by vla_ros's node executables."""

import signal
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from vla_ros.dds import apply_default_profile
from vla_ros.runtime.control_loop import set_fifo_priority


class _InterruptRecorder:
    """Python-level SIGINT handler that remembers the signal, then raises KeyboardInterrupt.

    rclpy's own handler chains to the Python one, so installing this before
    ``rclpy.init`` keeps rclpy's shutdown behaviour and adds a record of the Ctrl-C.
    """

    def __init__(self):
        self.received = False
        self.raising = True  # False: note the Ctrl-C only (rclpy's shutdown stops the spin)

    def __call__(self, signum, frame):
        self.received = True
        if self.raising:
            signal.default_int_handler(signum, frame)


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
        # A node may ask for its executor thread to run at SCHED_FIFO (see the inference
        # node's node_thread_priority): then the thread holding the interpreter lock
        # while the control thread waits for it is not preempted by other programs.
        priority = int(getattr(node, 'executor_priority', 0))
        if priority > 0:
            refused = set_fifo_priority(priority)
            if refused:
                node.get_logger().warning(f'executor runs at normal priority: SCHED_FIFO '
                                          f'{priority} refused: {refused}')
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        # While spinning, rclpy's own SIGINT handler shuts the context down, which ends
        # the spin; a KeyboardInterrupt raised at an arbitrary point inside the executor
        # left half-built tasks behind ("Exception ignored in Future.__del__"). So a
        # Ctrl-C is only noted from here on, through the cleanup below: there it could
        # cut destroy_node short (the driver's stop) and end the process by the signal.
        # (Before spinning it still raises: a constructor blocked on a robot connection
        # must stay interruptible.)
        interrupt.raising = False
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
        interrupt.raising = False  # the cleanup must finish (see above)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
