"""When to restart a policy process: the pure part of the supervisor (times injected).

A process that crashes, is killed or hangs past its limit gets restarted after a delay
that doubles with each consecutive failure (``initial``, 2x, 4x, ... up to ``maximum``),
so a policy that dies at once on every start does not spin the CPU reloading a model.
The count starts over once a process has stayed up ``stable_after`` seconds.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff and hang limits of the policy process."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    stable_after: float = 30.0

    def __post_init__(self):
        if not (self.initial > 0 and self.factor >= 1 and self.maximum >= self.initial
                and self.stable_after > 0):
            raise ValueError(f'invalid restart policy {self}')


def hang_limit(inference_timeout: float) -> float:
    """Seconds one inference may run before its process is killed and restarted.

    The engine already holds at ``inference_timeout`` (the deadline); killing the process
    costs a reload, so a policy that is only late gets as long again to answer.
    """
    return 2.0 * inference_timeout


class ProcessSupervisor:
    """Track one policy process's failures and say when to start it again."""

    def __init__(self, policy: RestartPolicy | None = None):
        """Start with no failure recorded."""
        self.policy = policy or RestartPolicy()
        self.failures = 0          # consecutive failures since the last stable run
        self.restarts = 0          # restarts started in total
        self.last_failure = ''
        self._up_since: float | None = None
        self._restart_at: float | None = None

    @property
    def restart_due_at(self) -> float | None:
        """When the next restart may start (None: none pending)."""
        return self._restart_at

    def started(self, now: float) -> None:
        """A process became READY at ``now``."""
        self._up_since = now
        self._restart_at = None

    def failed(self, reason: str, now: float) -> float:
        """The process died, hung or failed to start: returns the restart delay (s)."""
        if self._up_since is not None and now - self._up_since >= self.policy.stable_after:
            self.failures = 0  # it ran fine for a while: this is a new fault, not a loop
        self.failures += 1
        self._up_since = None
        self.last_failure = reason
        delay = min(self.policy.maximum,
                    self.policy.initial * self.policy.factor ** (self.failures - 1))
        self._restart_at = now + delay
        return delay

    def restart_due(self, now: float) -> bool:
        """Whether a pending restart should start now (marks it started)."""
        if self._restart_at is None or now < self._restart_at:
            return False
        self._restart_at = None
        self.restarts += 1
        return True

    @staticmethod
    def hung(busy_since: float | None, now: float, limit: float) -> bool:
        """Whether an inference started at ``busy_since`` has run past ``limit``."""
        return busy_since is not None and math.isfinite(busy_since) and \
            now - busy_since > limit
