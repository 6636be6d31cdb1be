"""A policy that runs in its own process: the node-side handle of the policy process.

:class:`RemotePolicy` looks like any policy to the engine (``spec``, ``reset``), but its
inferences go through :meth:`RemotePolicy.compute`: the frames are written into shared
memory owned by this side, a small message names them, and the chunk comes back. The
process is started with a fresh interpreter (``python -m vla_ros.runtime.policy_process``),
so the node never imports torch and never forks while rclpy's threads run.

While the process is idle, :meth:`prepare` has it preprocess the newest frames of the
policy's other cameras ahead of the next request: the request that uses one of them names
it instead of sending it, and that camera's resize is off the request's path (the first
camera's new frame is what starts a request, so its resize stays on it).

A crash (any exit, a signal, a segfault) or a hang (no answer within the limit: the
process is killed) makes :meth:`compute` return an error and :meth:`take_failure` report
it once; :meth:`restart` starts the same policy again. Which failures to restart and
when is :class:`vla_ros.runtime.supervision.ProcessSupervisor`'s decision.
"""

import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing import shared_memory
from multiprocessing.connection import Connection

import numpy as np

from vla_ros.actions.chunk_buffer import TimedChunk
from vla_ros.policies.contract import Policy, PolicyLoadError
from vla_ros.policies.registry import policy_info
from vla_ros.runtime.supervision import ProcessSupervisor, RestartPolicy

DEFAULT_START_TIMEOUT = 600.0  # a large checkpoint on a slow disk; a hang still ends


def spawn_policy_process(env=None, spare: bool = False):
    """A fresh policy process and the node's end of its socket: (Popen, Connection)."""
    parent, child = socket.socketpair()
    command = [sys.executable, '-m', 'vla_ros.runtime.policy_process', str(child.fileno())]
    if spare:
        command.append('--spare')
    try:
        proc = subprocess.Popen(command, pass_fds=(child.fileno(),), env=env)
    finally:
        child.close()
    return proc, Connection(parent.detach())


class SpareProcess:
    """One policy process started ahead of need, torch already imported, waiting for 'load'.

    A fresh interpreter spends most of a swap or a restart importing torch (seconds; tens
    of seconds on a loaded machine); a spare has done that while the robot was running.
    Kept only after a torch policy loaded (a scripted policy needs no spare), replaced
    after each use once that load has finished (so the two do not compete for the CPU).
    """

    def __init__(self):
        """No spare yet."""
        self._lock = threading.Lock()
        self._spare = None
        self._closed = False

    def take(self, env=None):
        """The spare if one is alive (and made with ``env``), else a fresh process."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare[2] == env and spare[0].poll() is None:
            return spare[0], spare[1]
        if spare is not None:
            _close_unused(*spare[:2])
        return spawn_policy_process(env)

    def replenish(self, env=None) -> None:
        """Start a spare if none is waiting."""
        with self._lock:
            if self._closed or (self._spare is not None and self._spare[0].poll() is None):
                return
            old, self._spare = self._spare, None
        if old is not None:
            _close_unused(*old[:2])
        proc, conn = spawn_policy_process(env, spare=True)
        with self._lock:
            if self._closed or self._spare is not None:
                extra = (proc, conn)
            else:
                self._spare, extra = (proc, conn, env), None
        if extra is not None:
            _close_unused(*extra)

    @property
    def pid(self):
        """Process id of the waiting spare (None: none)."""
        spare = self._spare
        return spare[0].pid if spare is not None and spare[0].poll() is None else None

    def close(self) -> None:
        """Stop the spare; no new one is started after this."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            _close_unused(*spare[:2])


def _close_unused(proc, conn) -> None:
    conn.close()  # the spare sees EOF before any 'load' and exits
    try:
        proc.wait(3.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(3.0)


def describe_exit(returncode: int | None) -> str:
    """'exited with code 3' / 'was killed by SIGSEGV' for a process's return code."""
    if returncode is None:
        return 'stopped answering'
    if returncode < 0:
        try:
            return f'was killed by {signal.Signals(-returncode).name}'
        except ValueError:
            return f'was killed by signal {-returncode}'
    return f'exited with code {returncode}'


class _FrameSlots:
    """One shared-memory segment per camera, resized when a camera's frame size changes."""

    def __init__(self):
        self._segments: dict[str, tuple[shared_memory.SharedMemory, tuple]] = {}

    def write(self, camera: str, rgb: np.ndarray) -> tuple[str, tuple]:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        segment = self._segments.get(camera)
        if segment is None or segment[1] != rgb.shape:
            if segment is not None:
                self._free(segment[0])
            segment = (shared_memory.SharedMemory(create=True, size=max(rgb.nbytes, 1)),
                       rgb.shape)
            self._segments[camera] = segment
        shm, shape = segment
        np.ndarray(shape, np.uint8, buffer=shm.buf)[...] = rgb
        return shm.name, shape

    def close(self):
        for shm, _ in self._segments.values():
            self._free(shm)
        self._segments.clear()

    @staticmethod
    def _free(shm):
        shm.close()
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


class RemotePolicy(Policy):
    """The engine's view of a policy that lives in a policy process."""

    def __init__(self, name: str, config: dict, torch_threads: int = 1, warmup: bool = True,
                 start_timeout: float = DEFAULT_START_TIMEOUT,
                 restart_policy: RestartPolicy | None = None, env=None,
                 spares: SpareProcess | None = None):
        """Describe the process to run; :meth:`start` starts it (from ``spares`` if given)."""
        self.name = name
        self.config = dict(config)
        self.torch_threads = int(torch_threads)
        self.warmup = warmup
        self.start_timeout = start_timeout
        self.env = env
        self.spares = spares
        self.supervisor = ProcessSupervisor(restart_policy)
        self.warmup_seconds = 0.0
        self.action_names_known = True  # as the policy process reports it when ready
        self._spec = None
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._slots = _FrameSlots()
        # Frames sent ahead to be preprocessed (camera -> (token, Frame)); cameras whose
        # prepare segment the process may still be reading: until the next result, as it
        # answers in order and prepares are sent only between requests.
        self._prepare_slots = _FrameSlots()
        self._prepared: dict[str, tuple[int, object]] = {}
        self._prepare_pending: set[str] = set()
        self._token = 0
        self._lock = threading.Lock()       # process handle and flags
        self._send_lock = threading.Lock()  # one writer on the socket at a time
        self._busy = threading.Lock()       # held during compute()
        self._seq = 0
        self.last_prepared_used = 0  # cameras the last compute() took from prepare()
        self._failure = ''
        self._closed = False

    # ---------------------------------------------------------------- Policy
    @property
    def spec(self):
        """The spec the policy process reported when it became ready."""
        if self._spec is None:
            raise RuntimeError(f'policy process of {self.name!r} is not started')
        return self._spec

    def reset(self) -> None:
        """Forward to the policy (it keeps state such as RT-1's frame history)."""
        self._send(('reset',))

    def predict_chunk(self, observation):
        """Not used: the engine's process worker calls :meth:`compute` with raw frames."""
        raise RuntimeError(f'policy {self.name!r} runs in its own process; use compute()')

    def close(self) -> None:
        """Stop the process (asks, then SIGTERM, then SIGKILL) and free the frames."""
        with self._lock:
            self._closed = True
            proc, conn = self._proc, self._conn
        self._stop_process(proc, conn)
        with self._busy:  # a compute() in flight has returned: the segments are free
            self._slots.close()
            self._prepare_slots.close()

    def close_when_idle(self) -> None:
        """Let an inference in flight finish (it is dropped by the engine), then close."""
        with self._lock:
            self._closed = True  # a death from here on is no failure
        threading.Thread(target=self.close, name=f'close-{self.name}', daemon=True).start()

    # --------------------------------------------------------------- process
    @property
    def pid(self) -> int | None:
        """Process id of the current policy process (None when none runs)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def ready(self) -> bool:
        """Whether a loaded process is up to take a request."""
        with self._lock:
            return (self._proc is not None and not self._closed and not self._failure
                    and self._proc.poll() is None)

    def start(self) -> None:
        """Start the process and wait until it is ready (PolicyLoadError on failure)."""
        if self.spares is not None:
            proc, conn = self.spares.take(self.env)
        else:
            proc, conn = spawn_policy_process(self.env)
        try:
            info = policy_info(self.name)
            conn.send(('load', self.name, self.config, self.torch_threads, self.warmup,
                       (info.target, info.description, info.family)))
            deadline = time.monotonic() + self.start_timeout
            while not conn.poll(0.1):
                if proc.poll() is not None:
                    raise PolicyLoadError(f'policy process {describe_exit(proc.returncode)} '
                                          f'while loading {self.name!r}')
                if time.monotonic() > deadline:
                    raise PolicyLoadError(f'policy process did not load {self.name!r} within '
                                          f'{self.start_timeout:.0f} s')
                with self._lock:
                    if self._closed:
                        raise PolicyLoadError(f'loading {self.name!r} was cancelled')
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                proc.wait(5.0)
                raise PolicyLoadError(f'policy process {describe_exit(proc.poll())} while '
                                      f'loading {self.name!r}') from None
            if reply[0] != 'ready':
                raise PolicyLoadError(reply[1])
        except BaseException:
            self._stop_process(proc, conn)
            raise
        with self._lock:
            if self._closed:
                cancelled = True
            else:
                cancelled = False
                self._spec, self.warmup_seconds = reply[1], reply[2]
                self.action_names_known = bool(reply[3]) if len(reply) > 3 else True
                self._proc, self._conn, self._failure = proc, conn, ''
                self._prepared, self._prepare_pending = {}, set()  # a new process knows none
        if cancelled:
            self._stop_process(proc, conn)
            raise PolicyLoadError(f'loading {self.name!r} was cancelled')
        if self.spares is not None and policy_info(self.name).family != 'scripted':
            self.spares.replenish(self.env)  # for the next swap or restart

    def restart(self) -> None:
        """Start a fresh process for the same policy (PolicyLoadError on failure)."""
        with self._lock:
            old_proc, old_conn = self._proc, self._conn
            self._proc = self._conn = None
        self._stop_process(old_proc, old_conn)
        spec = self._spec
        self.start()
        if spec is not None and self._spec != spec:
            # The engine converts actions with the spec it was given at the swap.
            new = self._spec
            self._spec = spec
            self.close()
            raise PolicyLoadError(f'restarted {self.name!r} reports a different spec '
                                  f'({new} != {spec})')

    def take_failure(self) -> str:
        """A crash or hang not yet reported ('' if none); reports each once."""
        with self._lock:
            if self._closed or self._proc is None:
                return ''
            if not self._failure and self._proc.poll() is not None:
                self._failure = f'policy process of {self.name!r} ' \
                                f'{describe_exit(self._proc.returncode)}'
            failure, self._failure = self._failure, ''
            if failure:
                self._proc = None  # dead: a restart brings a new one
            return failure

    def _mark_failed(self, reason: str) -> None:
        with self._lock:
            if not self._closed:
                self._failure = reason

    # -------------------------------------------------------------- inference
    def prepare(self, frames: dict) -> int:
        """Send the idle process the newest frames (camera -> Frame) of the other cameras.

        Call it only between :meth:`compute` calls (the process answers in order, so a
        prepare never delays a request by more than its own resize). Each camera's frame
        is sent once, and one per camera until the next result. The number sent.
        """
        with self._busy:
            with self._lock:
                conn, spec = (None, None) if self._closed else (self._conn, self._spec)
            if conn is None or spec is None:
                return 0
            sent = 0
            for cam in spec.camera_names[1:]:
                frame = frames.get(cam)
                done = self._prepared.get(cam)
                if frame is None or cam in self._prepare_pending or \
                        (done is not None and done[1] is frame):
                    continue
                try:
                    name, shape = self._prepare_slots.write(cam, frame.rgb)
                except (ValueError, OSError):
                    continue  # compute() reports a bad frame
                self._token += 1
                try:
                    with self._send_lock:
                        conn.send(('prepare', self._token, cam, name, shape))
                except OSError:
                    return sent  # a dead process is reported by take_failure / compute
                self._prepared[cam] = (self._token, frame)
                self._prepare_pending.add(cam)
                sent += 1
            return sent

    def compute(self, frames: dict, instruction: str, proprio, hang_limit: float
                ) -> tuple[TimedChunk | None, str]:
        """Run one inference on ``frames`` (camera -> Frame): (chunk, '') or (None, error).

        Waits at most ``hang_limit`` s for the answer; past it the process is killed.
        """
        with self._busy:
            with self._lock:
                proc, conn, closed = self._proc, self._conn, self._closed
            if proc is None or conn is None or closed:
                return None, f'policy process of {self.name!r} is not running'
            spec = self._spec
            try:
                refs = {}
                for cam in spec.camera_names:
                    if cam not in frames:
                        raise ValueError(f'no frame from camera {cam!r}')
                    frame, done = frames[cam], self._prepared.get(cam)
                    if done is not None and done[1] is frame:
                        refs[cam] = ('prepared', done[0], frame.stamp)
                    else:
                        name, shape = self._slots.write(cam, frame.rgb)
                        refs[cam] = ('shm', name, shape, frame.stamp)
            except (ValueError, OSError) as exc:
                return None, f'policy {self.name!r} failed: {exc}'
            self._seq += 1
            seq = self._seq
            stamp = frames[spec.camera_names[0]].stamp
            try:
                with self._send_lock:
                    conn.send(('predict', seq, refs, instruction, proprio))
                deadline = time.monotonic() + hang_limit
                while True:
                    if not conn.poll(max(0.0, deadline - time.monotonic())):
                        return None, self._kill_hung(proc, hang_limit)
                    reply = conn.recv()
                    if reply[0] == 'result' and reply[1] == seq:
                        break
                self._prepare_pending.clear()  # answered in order: every prepare is done
            except (EOFError, OSError):
                try:
                    proc.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
                reason = f'policy process of {self.name!r} {describe_exit(proc.poll())}'
                self._mark_failed(reason)
                return None, reason
            _, _, actions, error, _ = reply
            self.last_prepared_used = sum(ref[0] == 'prepared' for ref in refs.values())
            if actions is None:
                return None, error
            return TimedChunk(stamp=stamp, period=spec.control_period, actions=actions,
                              source=self.name), ''

    def _kill_hung(self, proc, hang_limit: float) -> str:
        reason = (f'policy process of {self.name!r} hung (no chunk within '
                  f'{hang_limit:.2f} s); killed')
        self._mark_failed(reason)
        proc.kill()
        proc.wait(5.0)
        return reason

    # ---------------------------------------------------------------- helpers
    def _send(self, message) -> None:
        with self._lock:
            conn = None if self._closed else self._conn
        if conn is None:
            return
        try:
            with self._send_lock:
                conn.send(message)
        except OSError:
            pass  # a dead process is reported by take_failure / compute

    def _stop_process(self, proc, conn) -> None:
        if conn is not None:
            try:
                with self._send_lock:
                    conn.send(('stop',))
            except OSError:
                pass
        if proc is not None:
            for stop, wait in ((None, 3.0), (proc.terminate, 2.0), (proc.kill, 2.0)):
                if stop is not None:
                    stop()
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if conn is not None:
            conn.close()
