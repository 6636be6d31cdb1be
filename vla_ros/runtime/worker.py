"""A thread that runs the policy whenever the engine says inference is due.

The control timer never calls the policy: it only wakes this worker, so a slow model
cannot delay a command.
"""

import threading


class InferenceWorker:
    """Run ``engine.run_inference`` off the control thread; hand results to a callback."""

    def __init__(self, engine, clock, on_result=None, poll_period: float = 0.02,
                 thread_name: str = 'vla-inference', priority: int = 0):
        """``clock()`` gives the engine's time; ``on_result(result)`` publishes a chunk.

        ``priority > 0``: the thread asks for SCHED_FIFO at it (refusal is silent here:
        the node reports it once for its executor).
        """
        self._engine = engine
        self._priority = int(priority)
        self._clock = clock
        self._on_result = on_result
        self._poll = poll_period
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wake(self) -> None:
        """Ask the worker to check now (new frame, due tick, new instruction)."""
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop; a policy stuck in predict cannot be interrupted, so don't wait forever."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def _run(self) -> None:
        if self._priority > 0:
            from vla_ros.runtime.control_loop import set_fifo_priority

            set_fifo_priority(self._priority)
        self._loop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll)
            self._wake.clear()
            if self._stop.is_set() or not self._engine.inference_due(self._clock()):
                continue
            # The chunk is published before the engine buffers it (see finish_inference).
            self._engine.run_inference(self._clock, self._on_result)
