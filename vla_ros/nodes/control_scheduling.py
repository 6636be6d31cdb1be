"""How the inference node schedules its control tick: a dedicated thread or an rclpy timer.

The thread (:class:`vla_ros.runtime.control_loop.ControlLoop`, parameter
``control_thread``, the default) wakes on absolute monotonic deadlines and publishes
directly, so a tick waits neither for the executor nor for an image callback. With
``use_sim_time`` the tick must follow the ROS clock, which only an rclpy timer does.
"""

import os
import sys

from vla_ros.runtime.control_loop import ControlLoop

# Benchmarks set this to a file path: the loop's (deadline, start, end) per tick is
# written there when the node stops.
TRACE_ENV = 'VLA_ROS_TICK_TRACE'

# A thread waiting for the interpreter lock asks its holder to drop it after this long
# (Python's default is 5 ms, more than the whole period-error budget of the tick).
SWITCH_INTERVAL_S = 0.001


def start_control_tick(node, rate_hz: float, tick, use_thread: bool, priority: int,
                       callback_group=None, lead: float = 0.0) -> ControlLoop | None:
    """Call ``tick`` at ``rate_hz``: the running :class:`ControlLoop`, or None for a timer.

    The timer calls ``tick()``; the thread calls ``tick(deadline)`` ``lead`` seconds before
    each monotonic deadline (``lead`` 0: at it).
    """
    period = 1.0 / rate_hz
    if not use_thread or node.get_parameter('use_sim_time').value:
        node.create_timer(period, lambda: tick(None), callback_group=callback_group)
        return None
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    logger = node.get_logger()

    def guarded(deadline=None):
        if node.context.ok():  # Ctrl-C shuts the context down before the node stops us
            tick(deadline)

    def on_error(exc):
        if node.context.ok():
            logger.error(f'control tick failed: {type(exc).__name__}: {exc}',
                         throttle_duration_sec=1.0)

    loop = ControlLoop(guarded, period, priority, on_warning=logger.warning,
                       on_error=on_error, trace=bool(os.environ.get(TRACE_ENV)), lead=lead)
    loop.start()
    return loop


def stop_control_tick(loop: ControlLoop | None) -> None:
    """Stop the loop (None: a timer, which the node's destruction ends); write its trace."""
    if loop is None:
        return
    loop.stop()
    path = os.environ.get(TRACE_ENV)
    if path and loop.trace is not None:
        try:
            with open(path, 'w') as f:
                f.writelines(f'{d:.6f} {s:.6f} {e:.6f}\n' for d, s, e in loop.trace)
        except OSError:
            pass  # a benchmark aid: never an error at shutdown
