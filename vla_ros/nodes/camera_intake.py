"""Camera frames taken on a thread of their own, not by the node's rclpy executor.

Measured on this project's 2-core CPU (640x480 rgb8 frames at 15 Hz, one subscriber,
``raw=True``, medians): the middleware has a frame 0.7-0.9 ms after its stamp; a wait set
that holds only the camera subscriptions wakes and takes it 1.35 ms after the stamp; the
rclpy executor runs the callback 3.0 ms after it. The executor rebuilds its wait set from
every entity of the node and walks them in Python for each message, and the camera frame
is the start of every inference, so its 1.7 ms are paid on every chunk.

:class:`CameraIntake` creates the subscriptions in a callback group that no executor may
run (:class:`NotInExecutor`), and waits on them in its own thread with a wait set of
just those subscriptions. The handlers run on that thread: they must be thread-safe
against the executor's callbacks (the inference node's go through the engine's lock).
"""

from __future__ import annotations

import threading

from rclpy.callback_groups import CallbackGroup

POLL_TIMEOUT_NS = 100_000_000  # how often the thread checks for stop without a frame


class NotInExecutor(CallbackGroup):
    """A callback group whose entities an executor never waits on nor takes from."""

    def can_execute(self, entity) -> bool:
        """Never: the intake thread takes these."""
        return False

    def beginning_execution(self, entity) -> bool:
        """Never."""
        return False

    def ending_execution(self, entity) -> None:
        """Nothing began."""


class CameraIntake:
    """Subscriptions served by a dedicated thread (started by :meth:`start`)."""

    def __init__(self, node, priority: int = 0, on_error=None):
        """``priority > 0``: the thread asks for SCHED_FIFO at it (as the node's others).

        ``on_error(exc)`` hears a handler's exception (the thread keeps serving).
        """
        self._node = node
        self._priority = int(priority)
        self._on_error = on_error or (lambda exc: None)
        self.group = NotInExecutor()
        self._subscriptions: list = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, msg_type, topic: str, handler, qos_profile, raw: bool = False):
        """Like ``create_subscription``; ``handler(message)`` runs on the intake thread."""
        subscription = self._node.create_subscription(
            msg_type, topic, handler, qos_profile, callback_group=self.group, raw=raw)
        self._subscriptions.append(subscription)
        return subscription

    def start(self) -> None:
        """Start serving the subscriptions made so far."""
        if self._subscriptions and self._thread is None:
            self._thread = threading.Thread(target=self._run, name='vla-camera-intake',
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (before the node destroys the subscriptions)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

        if self._priority > 0:
            from vla_ros.runtime.control_loop import set_fifo_priority

            set_fifo_priority(self._priority)  # refusal is reported for the executor
        context = self._node.context
        while not self._stop.is_set() and context.ok():
            try:
                with context.handle:
                    wait_set = _rclpy.WaitSet(len(self._subscriptions), 0, 0, 0, 0, 0,
                                              context.handle)
                for subscription in self._subscriptions:
                    with subscription.handle:
                        wait_set.add_subscription(subscription.handle)
                wait_set.wait(POLL_TIMEOUT_NS)
                for subscription in self._subscriptions:
                    with subscription.handle:
                        taken = subscription.handle.take_message(subscription.msg_type,
                                                                 subscription.raw)
                    if taken is not None and not self._stop.is_set():
                        self._call(subscription.callback, taken[0])
            except Exception as exc:  # noqa: BLE001 - shutting down, or a handle went away
                if self._stop.is_set() or not context.ok():
                    return
                self._call_error(exc)
                self._stop.wait(0.1)

    def _call(self, handler, message) -> None:
        try:
            handler(message)
        except Exception as exc:  # noqa: BLE001 - one bad frame must not end the intake
            self._call_error(exc)

    def _call_error(self, exc: Exception) -> None:
        try:
            self._on_error(exc)
        except Exception:  # noqa: BLE001 - a failing logger must not end the intake
            pass
