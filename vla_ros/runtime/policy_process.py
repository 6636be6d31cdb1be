"""The policy process: loads one policy and runs it on request (``python -m`` this module).

The inference node starts it with a fresh interpreter (never a fork of a process that
holds rclpy, whose threads and DDS state do not survive fork) and talks to it over a
socket: small pickled messages only. Camera frames arrive through shared memory that the
node owns and are read in place (see :class:`SharedFrames`); the node rewrites a segment
only once the answer to the request that named it is back. Frames of the policy's other
cameras may arrive ahead, while this process is idle, to be preprocessed then
(:class:`PreparedFrames`). This process never imports rclpy.

Messages, node -> policy process:
    ('load', name, config, torch_threads, warmup, (target, description, family))
                                                   first message (the registry entry, so
                                                   policies registered at run time load too)
    ('predict', seq, {camera: ('shm', shm_name, shape, stamp)
                              | ('prepared', token, stamp)}, instruction, proprio)
    ('prepare', token, camera, shm_name, shape)    preprocess this frame now, while idle;
                                                   a later request names it by token
    ('reset',)   ('stop',)
policy process -> node:
    ('ready', spec, warmup_seconds)   or   ('load_failed', error)
    ('result', seq, actions | None, error, compute_seconds)
"""

import mmap
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

import numpy as np


class SharedFrames:
    """Read-only views of the node's shared frame segments, one per camera.

    Opened directly rather than with multiprocessing.shared_memory, which would register
    each segment with a resource tracker of this process and unlink it on exit (they are
    the node's). A mapping stays open while its camera keeps the same segment: mapping
    anew for every frame costs a page fault per 4 KB.
    """

    def __init__(self):
        self._maps: dict[str, tuple[str, mmap.mmap, np.ndarray]] = {}

    def read(self, camera: str, name: str, shape: tuple) -> np.ndarray:
        """A read-only view of the frame in segment ``name``.

        The node writes a camera's segment only while it waits for no answer, so the view
        holds still during one request; anything kept beyond it must be a copy (see
        :func:`_preprocess`).
        """
        entry = self._maps.get(camera)
        if entry is None or entry[0] != name or entry[2].shape != tuple(shape):
            if entry is not None:
                old_map, entry = entry[1], None
                del self._maps[camera]  # drops the view, so the mapping can close
                try:
                    old_map.close()
                except BufferError:
                    pass  # still referenced somewhere: unmapped with its last view
            size = int(np.prod(shape))
            fd = os.open(f'/dev/shm/{name.lstrip("/")}', os.O_RDONLY)
            try:
                mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            view = np.frombuffer(mm, dtype=np.uint8, count=size).reshape(shape)
            entry = self._maps[camera] = (name, mm, view)
        return entry[2]


def warmup_observation(spec) -> dict:
    """Frames for one dummy inference: mid-grey images at the policy's input size."""
    from vla_ros.runtime.engine import Frame

    w, h = spec.image_size
    return {cam: Frame(np.full((h, w, 3), 127, np.uint8), 0.0) for cam in spec.camera_names}


# Imports and checkpoint loading are background work: on a busy CPU they must not take
# cores from the control loop. Linux nice values are per thread, so this lowers only the
# loading thread; inference (and warm-up, whose torch threads inherit the creating
# thread's priority) runs in the main thread at the node's priority.
LOADING_NICENESS = 10
# The node may ask for inference itself to run below its own priority (the parameter
# policy_niceness): a policy computing back to back then yields the CPU to the control
# loop and the driver whenever they wake, instead of sharing it equally.
NICENESS_ENV = 'VLA_ROS_POLICY_NICENESS'


def apply_niceness(environ=os.environ) -> int:
    """Set the calling thread's nice value from NICENESS_ENV; the value applied (0: none)."""
    try:
        niceness = int(environ.get(NICENESS_ENV, '0'))
    except ValueError:
        return 0
    if niceness <= 0:
        return 0
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (OSError, AttributeError):
        return 0
    return niceness


def in_background(fn, *args):
    """Run ``fn(*args)`` in a thread at LOADING_NICENESS; its result or its exception."""
    outcome = {}

    def run():
        try:
            # Never raise the priority of a process niced further (that needs privilege).
            current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           max(LOADING_NICENESS, current))
        except (OSError, AttributeError):
            pass  # not Linux, or not allowed: load at normal priority
        try:
            outcome['value'] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome['error'] = exc

    thread = threading.Thread(target=run, name='policy-load')
    thread.start()
    thread.join()
    if 'error' in outcome:
        raise outcome['error']
    return outcome['value']


def load(name: str, config: dict, torch_threads: int, warmup: bool):
    """Make the policy, set torch's threads, run one dummy inference: (policy, seconds)."""
    from vla_ros.policies.registry import make_policy
    from vla_ros.policies.scripted import ScriptedPolicy
    from vla_ros.runtime.engine import predict_chunk

    policy = in_background(lambda: make_policy(name, **config))
    if torch_threads > 0 and 'torch' in sys.modules:
        sys.modules['torch'].set_num_threads(torch_threads)
    seconds = 0.0
    # The scripted policy has nothing to warm up, and it counts calls for fault injection.
    if warmup and not isinstance(policy, ScriptedPolicy):
        # First calls pay for lazy init, allocator growth and kernel selection (seconds
        # for some models): pay them here, before READY, not in the first real deadline.
        spec = policy.spec
        proprio = np.zeros(_proprio_size(policy), np.float32) if spec.uses_proprio else None
        start = time.perf_counter()
        _, error = predict_chunk(policy, name, warmup_observation(spec), 'warm up', proprio,
                                 _preprocess)
        seconds = time.perf_counter() - start
        if error:
            raise RuntimeError(f'warm-up inference failed: {error}')
        policy.reset()
    return policy, seconds


def _proprio_size(policy) -> int:
    # Torch policies say how long a proprio vector they were built for; otherwise the
    # contract's example length (the action dimension).
    dim = getattr(getattr(policy, 'config', None), 'proprio_dim', None)
    return int(dim) if dim else policy.spec.action_space.dim


def _preprocess(rgb, size, method='default'):
    # The engine's own preprocessing, with the policy spec's resize method (OpenVLA
    # checkpoints resize with Pillow's bicubic), so both modes feed the same pixels.
    from vla_ros.images import prepare_image

    image = prepare_image(rgb, size, method=method)
    # A frame already at the policy's size comes back as the shared-memory view itself,
    # which the node overwrites with its next frame; a policy may keep what it is given
    # (a frame history), so that one is copied. A resized image is new memory already.
    return image.copy() if np.may_share_memory(image, rgb) else image


class PreparedFrames:
    """Frames of the policy's other cameras preprocessed while the process was idle.

    Per camera, the last one sent (token, image). Its segment is the node's prepare
    segment, which the node leaves alone until this process has answered the next
    request; so a prepare that failed is simply done again, from that segment, by the
    request that names it (and fails there with the policy's own error).
    """

    def __init__(self, shared: SharedFrames):
        self._shared = shared
        self._done: dict[str, tuple[int, np.ndarray | None, str, tuple]] = {}
        self._images: list = []  # the prepared images the current request uses

    def prepare(self, spec, token: int, camera: str, name: str, shape: tuple) -> None:
        """Preprocess the frame in segment ``name`` as the next request would."""
        try:
            rgb = self._shared.read(('prepare', camera), name, shape)
            image = _preprocess(rgb, spec.image_size, spec.image_resize)
        except Exception:  # noqa: BLE001 - redone, and reported, by the request
            image = None
        self._done[camera] = (token, image, name, tuple(shape))

    def frames(self, refs: dict) -> dict:
        """Camera -> Frame for a request's references (shared memory or prepared)."""
        from vla_ros.runtime.engine import Frame

        frames, self._images = {}, []
        for cam, ref in refs.items():
            if ref[0] == 'shm':
                _, name, shape, stamp = ref
                frames[cam] = Frame(self._shared.read(cam, name, shape), stamp)
                continue
            _, token, stamp = ref
            done = self._done.get(cam)
            if done is None or done[0] != token:
                raise ValueError(f'the node named a prepared frame of camera {cam!r} that '
                                 f'this process never got')
            if done[1] is None:  # its prepare failed: from the segment, the usual way
                frames[cam] = Frame(self._shared.read(('prepare', cam), done[2], done[3]),
                                    stamp)
            else:
                frames[cam] = Frame(done[1], stamp)
                self._images.append(done[1])
        return frames

    def preprocess(self, rgb, size, method='default'):
        """``_preprocess``, except that a prepared image is already done."""
        if any(rgb is image for image in self._images):
            return rgb
        return _preprocess(rgb, size, method)


def serve(conn: Connection) -> int:
    """Answer the node's messages until it says stop or goes away."""
    from vla_ros.runtime.engine import predict_chunk

    _preprocess(np.zeros((2, 2, 3), np.uint8), (1, 1))  # import cv2 now, not in a deadline
    shared = SharedFrames()
    prepared = PreparedFrames(shared)
    try:
        message = conn.recv()
    except EOFError:
        return 0
    _, name, config, torch_threads, warmup, entry = message
    try:
        from vla_ros.policies.registry import available_policies, register_policy

        if name not in available_policies():
            register_policy(name, entry[0], entry[1], entry[2])
        policy, warmup_seconds = load(name, config, torch_threads, warmup)
    except Exception as exc:  # noqa: BLE001 - every load failure goes back to the node
        conn.send(('load_failed', f'{type(exc).__name__}: {exc}'))
        return 0
    # Whether the action names are the checkpoint's (joint-space robots match them by name).
    conn.send(('ready', policy.spec, warmup_seconds,
               bool(getattr(policy, 'action_names_known', True))))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the node is gone: nothing to serve
        kind = message[0]
        if kind == 'stop':
            break
        if kind == 'reset':
            policy.reset()
            continue
        if kind == 'prepare':
            prepared.prepare(policy.spec, *message[1:])
            continue
        _, seq, frame_refs, instruction, proprio = message
        start = time.perf_counter()
        try:
            frames = prepared.frames(frame_refs)
        except (OSError, ValueError) as exc:
            conn.send(('result', seq, None, f'cannot read the shared frame: {exc}', 0.0))
            continue
        chunk, error = predict_chunk(policy, name, frames, instruction, proprio,
                                     prepared.preprocess)
        actions = None if chunk is None else chunk.actions
        try:
            conn.send(('result', seq, actions, error, time.perf_counter() - start))
        except (BrokenPipeError, OSError):
            break
    policy.close()
    return 0


def main(argv=None) -> int:
    """Entry point: ``python -m vla_ros.runtime.policy_process FD``."""
    argv = sys.argv[1:] if argv is None else argv
    # A terminal's Ctrl-C reaches the whole process group: the node stops this process
    # itself (or it sees the socket close), so a KeyboardInterrupt here is only noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    apply_niceness()  # before any thread starts: torch's threads inherit it
    conn = Connection(int(argv[0]))
    if '--spare' in argv[1:]:
        # Started ahead of need: pay for the heavy imports now, then wait for 'load'.
        try:
            in_background(__import__, 'torch')
        except ImportError:
            pass
    try:
        return serve(conn)
    finally:
        conn.close()


if __name__ == '__main__':
    sys.exit(main())
