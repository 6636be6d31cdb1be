"""A deterministic, model-free policy for testing the runtime and fault handling.

Every chunk is a pure function of (constructor arguments, instruction, observation stamp,
row index), so tests can predict exactly what the runtime should publish.

Patterns (``v`` = per-step displacement vector built from ``velocity``, one value per
continuous dimension in order, missing values 0; binary dimensions such as the gripper get
``gripper``; discrete dimensions such as terminate get their lowest value, i.e. "continue"):

- ``constant``: every row is ``v``.
- ``sine``: like constant, but the first two continuous dimensions (x, y) become
  ``a * sin(w t)`` and ``a * cos(w t)`` with ``t = stamp + i * control_period``,
  ``a = |(v_x, v_y)|`` (0.02 if that is 0) and a 2 s period, so consecutive chunks differ.
- ``ramp``: row ``i`` is ``v * (i + 1) / chunk_length``.

Instruction rules (whole words, case-insensitive): ``stop``/``halt``/``freeze`` -> all
continuous dimensions 0 (gripper kept); otherwise ``left``/``back``/``backward(s)``/
``reverse`` -> continuous dimensions negated; ``finish``/``finished``/``done`` -> a
``terminate`` dimension, if the space has one, says "done" (its highest category) in
every row. Rows are finally clipped to the action
space bounds. ``noise > 0`` adds Gaussian noise seeded by ``(seed, stamp)``.

Fault injection: after ``fail_after`` calls (``None`` = from the first call),
``fail_mode`` ``"raise"`` raises :class:`ScriptedPolicyFault`, ``"nan"`` and
``"wrong_shape"`` return a bad chunk *unchecked* (so the runtime's ``check_chunk`` path is
what catches it), ``"hang"`` blocks for ``hang_seconds`` (or until :meth:`release`),
``"abort"`` kills the whole process with SIGABRT (``os.abort``: a segfault's stand-in, for
the policy process's crash handling; never use it with ``policy_process: false``).
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from typing import Sequence

import numpy as np

from vla_ros.actions.spaces import ActionSpace, load_action_space
from vla_ros.policies.contract import Observation, Policy, PolicySpec

PATTERNS = ('constant', 'sine', 'ramp')
FAIL_MODES = (None, 'raise', 'nan', 'wrong_shape', 'hang', 'abort')
_STOP_WORDS = frozenset({'stop', 'halt', 'freeze'})
_DONE_WORDS = frozenset({'finish', 'finished', 'done'})
_REVERSE_WORDS = frozenset({'left', 'back', 'backward', 'backwards', 'reverse'})
_SINE_PERIOD = 2.0


class ScriptedPolicyFault(RuntimeError):
    """The injected failure of ``fail_mode="raise"`` (or a released hang)."""


class ScriptedPolicy(Policy):
    """Deterministic action chunks with optional latency and fault injection."""

    def __init__(
        self,
        action_space: str | ActionSpace = 'arm7',
        chunk_length: int = 8,
        latency: float = 0.0,
        control_period: float = 0.1,
        pattern: str = 'constant',
        velocity: Sequence[float] = (0.02, 0.0, 0.0, 0.0, 0.0, 0.0),
        gripper: float = 1.0,
        seed: int = 0,
        fail_after: int | None = None,
        fail_mode: str | None = None,
        image_size: tuple[int, int] = (224, 224),
        camera_names: Sequence[str] = ('front',),
        noise: float = 0.0,
        hang_seconds: float = 3600.0,
        name: str = 'scripted',
    ) -> None:
        space = load_action_space(action_space) if isinstance(action_space, str) else action_space
        if pattern not in PATTERNS:
            raise ValueError(f'unknown pattern {pattern!r}; expected one of {PATTERNS}')
        if fail_mode not in FAIL_MODES:
            raise ValueError(f'unknown fail_mode {fail_mode!r}; expected one of {FAIL_MODES}')
        if fail_after is not None and int(fail_after) < 0:
            raise ValueError(f'fail_after must be >= 0 or None, got {fail_after!r}')
        if float(latency) < 0 or float(noise) < 0:
            raise ValueError('latency and noise must be >= 0')
        if int(seed) < 0:
            raise ValueError(f'seed must be >= 0, got {seed!r}')
        self._spec = PolicySpec(
            name=name,
            action_space=space,
            chunk_length=chunk_length,
            camera_names=tuple(camera_names),
            image_size=image_size,
            control_period=control_period,
        )
        kinds = [d.kind for d in space.dimensions]
        self._motion = np.array([k == 'continuous' for k in kinds])
        motion_idx = np.flatnonzero(self._motion)
        vel = np.asarray(velocity, dtype=np.float64).ravel()
        if vel.size > motion_idx.size or not np.isfinite(vel).all():
            raise ValueError(
                f'velocity must have at most {motion_idx.size} finite values for action space '
                f'{space.name!r} (continuous dims {[space.names[i] for i in motion_idx]}), '
                f'got {tuple(velocity)}'
            )
        base = space.low.copy()  # discrete dims (terminate) -> lowest category = continue
        base[self._motion] = 0.0
        base[motion_idx[: vel.size]] = vel
        base[[k == 'binary' for k in kinds]] = float(gripper)
        self._base = base
        self._xy = motion_idx[:2]
        self.pattern = pattern
        self.latency = float(latency)  # public: tests may change it between calls
        self.noise = float(noise)
        self.seed = int(seed)
        self.fail_after = None if fail_after is None else int(fail_after)
        self.fail_mode = fail_mode
        self.hang_seconds = float(hang_seconds)
        self.calls = 0
        self.resets = 0
        self._released = threading.Event()

    @property
    def spec(self) -> PolicySpec:
        """Spec built from the constructor arguments."""
        return self._spec

    def reset(self) -> None:
        """Count resets (the policy is stateless; ``calls`` keeps counting for faults)."""
        self.resets += 1

    def release(self) -> None:
        """Wake any ``hang`` in progress (and future ones) so test threads can finish."""
        self._released.set()

    def expected_chunk(self, instruction: str, stamp: float) -> np.ndarray:
        """Return the chunk for (instruction, stamp) without latency, faults or checks."""
        spec = self._spec
        n = spec.chunk_length
        rows = np.tile(self._base, (n, 1))
        if self.pattern == 'ramp':
            ramp = (np.arange(1, n + 1) / n)[:, None]
            rows[:, self._motion] *= ramp
        elif self.pattern == 'sine' and self._xy.size:
            amp = float(np.linalg.norm(self._base[self._xy])) or 0.02
            t = stamp + np.arange(n) * spec.control_period
            phase = 2.0 * math.pi * t / _SINE_PERIOD
            rows[:, self._xy[0]] = amp * np.sin(phase)
            if self._xy.size > 1:
                rows[:, self._xy[1]] = amp * np.cos(phase)
        words = set(re.findall(r'[a-z]+', instruction.lower()))
        if words & _STOP_WORDS:
            rows[:, self._motion] = 0.0
        elif words & _REVERSE_WORDS:
            rows[:, self._motion] *= -1.0
        if words & _DONE_WORDS and 'terminate' in spec.action_space.names:
            i = spec.action_space.index('terminate')
            rows[:, i] = spec.action_space.high[i]
        if self.noise > 0:
            key = int(round(abs(stamp) * 1e6)) % (1 << 63)
            rng = np.random.default_rng((self.seed, key))
            rows[:, self._motion] += rng.normal(0.0, self.noise, (n, int(self._motion.sum())))
        return spec.action_space.clip(rows).astype(np.float32)

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """Validate, sleep ``latency``, apply any due fault, return the scripted chunk."""
        self.validate_observation(observation)
        self.calls += 1
        if self.latency > 0:
            time.sleep(self.latency)
        chunk = self.expected_chunk(observation.instruction, float(observation.stamp))
        if self.fail_mode is not None and self.calls > (self.fail_after or 0):
            if self.fail_mode == 'raise':
                raise ScriptedPolicyFault(
                    f'scripted policy: injected failure on call {self.calls}'
                )
            if self.fail_mode == 'nan':
                chunk[-1, 0] = np.nan
                return chunk
            if self.fail_mode == 'wrong_shape':
                return chunk[:, :-1]
            if self.fail_mode == 'abort':
                os.abort()
            if self.fail_mode == 'hang':
                self._released.wait(self.hang_seconds)
                raise ScriptedPolicyFault(f'scripted policy: hang ended on call {self.calls}')
        return self.check_chunk(chunk)
