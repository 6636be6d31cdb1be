"""The worker of the process mode: the engine's inferences go to the policy process.

Same contract with the engine as :class:`vla_ros.runtime.worker.InferenceWorker`
(``inference_due`` -> ``begin_inference`` -> compute -> ``finish_inference``), but the
compute step is :meth:`RemotePolicy.compute`: this thread only copies frames into shared
memory and waits on a socket, so the node's interpreter is free for the control timer.
It also supervises the active policy process: a crash or hang holds the robot with the
reason (``record_inference_error`` clears the buffer) and the process is restarted with
backoff (:class:`vla_ros.runtime.supervision.ProcessSupervisor`).
"""

import threading
import time

from vla_ros.runtime.engine import log_worker_timing
from vla_ros.runtime.remote_policy import RemotePolicy
from vla_ros.runtime.supervision import hang_limit
from vla_ros.runtime.worker import InferenceWorker


class ProcessInferenceWorker(InferenceWorker):
    """Run inferences in the active :class:`RemotePolicy`'s process; restart it on faults.

    The thread's life cycle (start, wake, stop) is the thread worker's; ``stop`` leaves the
    policy processes to the node, which closes them.
    """

    def __init__(self, engine, clock, on_result=None, on_event=None,
                 poll_period: float = 0.02, wall_clock=time.monotonic, priority: int = 0):
        """``on_event(level, text)`` logs restarts; ``wall_clock`` times the backoff."""
        super().__init__(engine, clock, on_result, poll_period,
                         thread_name='vla-inference-proc', priority=priority)
        self._wall = wall_clock
        self._log = on_event or (lambda level, text: None)
        self._restarting: set[int] = set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll)
            self._wake.clear()
            if self._stop.is_set():
                break
            policy = self._engine.policy
            if not isinstance(policy, RemotePolicy):
                continue
            self.supervise(policy)
            if not policy.ready:
                continue
            if not self._engine.inference_due(self._clock()):
                # Idle: let the process preprocess the other cameras' new frames now.
                policy.prepare(self._engine.latest_frames())
                continue
            job = self._engine.begin_inference(self._clock())
            if job is None:
                continue
            limit = hang_limit(self._engine.config.inference_timeout)
            started = self._clock()
            chunk, error = job.policy.compute(job.frames, job.instruction, job.proprio, limit)
            if self._stop.is_set():
                break  # shutting down: nobody publishes any more
            finished = self._clock()
            self._engine.finish_inference(job, chunk, error, finished, self._on_result)
            if chunk is not None:
                log_worker_timing(chunk.stamp, started, finished,
                                  job.policy.last_prepared_used)
            if chunk is None:
                self.supervise(job.policy)  # report a crash at once, not a poll later

    def supervise(self, policy: RemotePolicy) -> None:
        """Hold on a crash or hang of ``policy``'s process; start due restarts."""
        failure = policy.take_failure()
        if failure:
            delay = policy.supervisor.failed(failure, self._wall())
            self._fault(policy, f'{failure}; restarting in {delay:.1f} s')
        if id(policy) not in self._restarting and policy.supervisor.restart_due(self._wall()):
            self._restarting.add(id(policy))
            threading.Thread(target=self._restart, args=(policy,), daemon=True,
                             name=f'restart-{policy.name}').start()

    def _restart(self, policy: RemotePolicy) -> None:
        n = policy.supervisor.restarts
        self._on_event('warn', f'restarting the policy process of {policy.name!r} '
                               f'(restart {n}; {policy.supervisor.last_failure})')
        try:
            policy.restart()
        except Exception as exc:  # noqa: BLE001 - any failure to start is retried
            if not self._stop.is_set() and self._engine.policy is policy:
                delay = policy.supervisor.failed(f'restart {n} failed: {exc}', self._wall())
                self._fault(policy, f'restart {n} of the policy process of {policy.name!r} '
                                    f'failed: {exc}; next attempt in {delay:.1f} s')
        else:
            policy.supervisor.started(self._wall())
            self._on_event('info', f'policy process of {policy.name!r} restarted '
                                   f'(pid {policy.pid})')
        finally:
            self._restarting.discard(id(policy))
            self._wake.set()

    def _on_event(self, level: str, text: str) -> None:
        try:
            self._log(level, text)
        except Exception:  # noqa: BLE001 - a failing logger must not stop supervision
            pass

    def _fault(self, policy: RemotePolicy, message: str) -> None:
        if self._engine.policy is policy:  # a retired policy's end is no fault
            self._engine.record_inference_error(message, self._clock())
        self._on_event('error', message)
