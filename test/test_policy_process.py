"""The policy process: supervision logic (fake clock), real processes crashing and hanging."""

import os
import signal
import time

import numpy as np
import pytest

from vla_ros.runtime.engine import EngineConfig, EngineState, Frame, InferenceEngine
from vla_ros.runtime.process_worker import ProcessInferenceWorker
from vla_ros.runtime.remote_policy import RemotePolicy, SpareProcess, describe_exit
from vla_ros.runtime.supervision import ProcessSupervisor, RestartPolicy, hang_limit

SCRIPTED = {'chunk_length': 8, 'image_size': [64, 48]}


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


# ----------------------------------------------------------- supervision (pure)
def test_backoff_doubles_up_to_the_maximum():
    sup = ProcessSupervisor(RestartPolicy(initial=0.5, factor=2.0, maximum=3.0))
    delays = []
    now = 0.0
    for _ in range(5):
        delays.append(sup.failed('died', now))
        assert not sup.restart_due(now + delays[-1] - 0.01)
        now += delays[-1]
        assert sup.restart_due(now)
        assert not sup.restart_due(now)  # one restart per failure
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert sup.restarts == 5 and sup.last_failure == 'died'


def test_backoff_starts_over_after_a_stable_run():
    sup = ProcessSupervisor(RestartPolicy(initial=1.0, stable_after=30.0))
    assert sup.failed('a', 0.0) == 1.0
    sup.started(1.0)
    assert sup.failed('b', 5.0) == 2.0  # up only 4 s: the same fault again
    sup.started(7.0)
    assert sup.failed('c', 40.0) == 1.0  # up 33 s: a new fault


def test_hang_detection_and_limit():
    assert hang_limit(2.0) == 4.0
    assert not ProcessSupervisor.hung(None, 10.0, 1.0)
    assert not ProcessSupervisor.hung(9.5, 10.0, 1.0)
    assert ProcessSupervisor.hung(8.5, 10.0, 1.0)
    with pytest.raises(ValueError):
        RestartPolicy(initial=0.0)


class FakeRemote(RemotePolicy):
    """A RemotePolicy without a process: its failures and restarts are scripted."""

    def __init__(self, spec, restart_results):
        super().__init__('scripted', {}, restart_policy=RestartPolicy(initial=0.5,
                                                                      maximum=4.0))
        self._spec = spec
        self.failure = ''
        self.restart_results = list(restart_results)
        self.restart_calls = 0

    @property
    def ready(self):
        return not self.failure

    def take_failure(self):
        failure, self.failure = self.failure, ''
        return failure

    def restart(self):
        self.restart_calls += 1
        error = self.restart_results.pop(0)
        if error:
            raise RuntimeError(error)

    def reset(self):
        pass


def test_worker_holds_on_a_crash_and_restarts_with_backoff():
    """Fake wall clock: crash -> hold with reason -> restarts at 0.5, then 1.0 s later."""
    from vla_ros.policies.scripted import ScriptedPolicy

    clock, wall = Clock(), Clock(0.0)
    engine = InferenceEngine(EngineConfig())
    remote = FakeRemote(ScriptedPolicy(**SCRIPTED).spec, ['no checkpoint', ''])
    engine.finish_policy_load('scripted', remote)
    engine.set_instruction('go')
    engine.set_image('front', np.zeros((48, 64, 3), np.uint8), clock())
    events = []
    worker = ProcessInferenceWorker(engine, clock, on_event=lambda lv, t: events.append(t),
                                    wall_clock=wall)
    remote.failure = 'policy process of \'scripted\' was killed by SIGSEGV'
    worker.supervise(remote)
    status = engine.status(clock())
    assert status.state == EngineState.ERROR
    assert 'SIGSEGV' in status.message and 'restarting in 0.5 s' in status.message
    assert engine.command_at(clock()).hold
    wall.t = 0.4
    worker.supervise(remote)
    assert remote.restart_calls == 0
    wall.t = 0.5
    worker.supervise(remote)
    assert wait_for(lambda: 'next attempt in 1.0 s' in engine.status(clock()).message, 5)
    assert remote.restart_calls == 1
    wall.t = 1.4
    worker.supervise(remote)
    assert remote.restart_calls == 1
    wall.t = 1.5
    worker.supervise(remote)
    assert wait_for(lambda: any('restarted' in e for e in events), 5)
    assert remote.restart_calls == 2 and remote.supervisor.failures == 2


# ------------------------------------------------------------- real processes
FRAME = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)


@pytest.fixture
def remote_factory():
    """Started RemotePolicies, closed at the end (the scripted one with SCRIPTED's config)."""
    made = []

    def make(name='scripted', env=None, **config):
        base = SCRIPTED if name == 'scripted' else {}
        policy = RemotePolicy(name, {**base, **config}, env=env)
        made.append(policy)
        policy.start()
        return policy

    yield make
    for policy in made:
        policy.close()


def test_remote_chunks_equal_the_in_process_policy(remote_factory):
    from vla_ros.policies.scripted import ScriptedPolicy

    remote = remote_factory(pattern='sine')
    local = ScriptedPolicy(**{**SCRIPTED, 'pattern': 'sine'})
    assert remote.spec == local.spec and remote.pid != os.getpid()
    for stamp in (10.0, 10.3):
        chunk, error = remote.compute({'front': Frame(FRAME, stamp)}, 'move back', None, 5.0)
        assert error == ''
        assert chunk.stamp == stamp and chunk.source == 'scripted'
        np.testing.assert_allclose(chunk.actions, local.expected_chunk('move back', stamp))
    # A bad request is an error, not a dead process.
    chunk, error = remote.compute({}, 'go', None, 5.0)
    assert chunk is None and 'front' in error and remote.ready


def test_remote_load_failure_names_the_cause():
    remote = RemotePolicy('scripted', {'pattern': 'zigzag'})
    with pytest.raises(Exception, match='zigzag'):
        remote.start()
    assert remote.pid is None


@pytest.mark.parametrize('how', ['sigkill', 'abort'])
def test_crash_is_reported_once_and_restart_serves_again(remote_factory, how):
    if how == 'abort':  # the policy itself calls os.abort() on its second call
        remote = remote_factory(fail_mode='abort', fail_after=1)
        first, _ = remote.compute({'front': Frame(FRAME, 1.0)}, 'go', None, 5.0)
        assert first is not None
        chunk, error = remote.compute({'front': Frame(FRAME, 1.1)}, 'go', None, 5.0)
        expected = 'SIGABRT'
    else:
        remote = remote_factory()
        os.kill(remote.pid, signal.SIGKILL)
        assert wait_for(lambda: not remote.ready, 5)
        chunk, error = None, remote.take_failure()
        expected = 'SIGKILL'
    assert chunk is None and expected in error
    assert expected in remote.take_failure() if how == 'abort' else True
    assert remote.take_failure() == ''
    old_pid = None if how == 'abort' else 0
    remote.restart()
    assert remote.ready and remote.pid not in (None, old_pid)
    chunk, error = remote.compute({'front': Frame(FRAME, 2.0)}, 'go', None, 5.0)
    assert chunk is not None, error


def test_hang_past_the_limit_kills_the_process(remote_factory):
    remote = remote_factory(fail_mode='hang', fail_after=0, hang_seconds=60.0)
    pid = remote.pid
    start = time.monotonic()
    chunk, error = remote.compute({'front': Frame(FRAME, 1.0)}, 'go', None, 0.5)
    assert chunk is None and 'hung' in error and time.monotonic() - start < 5.0
    assert 'hung' in remote.take_failure()
    assert not os.path.exists(f'/proc/{pid}') or _is_zombie(pid)


def _is_zombie(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split()[2] == 'Z'
    except FileNotFoundError:
        return True


def test_describe_exit():
    assert describe_exit(-9) == 'was killed by SIGKILL'
    assert describe_exit(-11) == 'was killed by SIGSEGV'
    assert describe_exit(3) == 'exited with code 3'


def test_worker_end_to_end_crash_hold_restart_running():
    """Real process: running, SIGKILL -> ERROR with the reason, restart -> running again."""
    from vla_ros.policies.scripted import ScriptedPolicy

    engine = InferenceEngine(EngineConfig(control_rate_hz=10.0, inference_rate_hz=5.0))
    remote = RemotePolicy('scripted', SCRIPTED, restart_policy=RestartPolicy(initial=0.2))
    remote.start()
    engine.finish_policy_load('scripted', remote)
    engine.set_instruction('move forward')
    results = []
    worker = ProcessInferenceWorker(engine, time.monotonic, on_result=results.append)
    stop_camera = False

    def camera_and_control():
        while not stop_camera:
            engine.set_image('front', FRAME, time.monotonic())
            engine.command_at(time.monotonic())
            worker.wake()
            time.sleep(0.05)

    import threading
    cam = threading.Thread(target=camera_and_control, daemon=True)
    cam.start()
    worker.start()
    try:
        assert wait_for(lambda: engine.status(time.monotonic()).state == EngineState.RUNNING)
        assert not engine.command_at(time.monotonic()).hold
        first_pid = remote.pid
        os.kill(first_pid, signal.SIGKILL)
        assert wait_for(lambda: 'SIGKILL' in engine.status(time.monotonic()).message, 10)
        assert engine.command_at(time.monotonic()).hold
        n = len(results)
        assert wait_for(lambda: len(results) > n + 2 and engine.status(
            time.monotonic()).state == EngineState.RUNNING)
        assert remote.pid not in (None, first_pid)
        assert not engine.command_at(time.monotonic()).hold
        assert np.allclose(results[-1].chunk.actions,
                           ScriptedPolicy(**SCRIPTED).expected_chunk('move forward',
                                                                     results[-1].chunk.stamp))
    finally:
        stop_camera = True
        worker.stop()
        remote.close()


# ------------------------------------------------------ the node, as a process
def test_untrained_learned_policy_is_announced():
    from vla_ros.nodes.inference_node import untrained_warning
    from vla_ros.policies.scripted import ScriptedPolicy

    note = untrained_warning('rt1', {})
    assert 'UNTRAINED' in note and 'model_path' in note
    assert untrained_warning('rt1', {'model_path': '/ckpt'}) == ''
    assert untrained_warning('scripted', {}) == ''
    assert 'UNTRAINED' in untrained_warning('openvla_sim', {})  # a registry flag, per entry
    assert untrained_warning('pi0', {}) == ''  # refuses to load without model_path anyway
    from vla_ros.policies.registry import register_policy, unregister_policy

    register_policy('test_learned_plugin', 'vla_ros.policies.scripted:ScriptedPolicy',
                    learned=True)
    try:
        assert 'UNTRAINED' in untrained_warning('test_learned_plugin', {})
    finally:
        unregister_policy('test_learned_plugin')
    engine = InferenceEngine(EngineConfig())
    engine.finish_policy_load('rt1', ScriptedPolicy(), note=note)
    assert 'UNTRAINED' in engine.status(0.0).message


def test_warm_up_runs_before_ready_for_a_torch_policy():
    from vla_ros.models import model_path

    model = model_path('octo')
    spares = SpareProcess()
    remote = RemotePolicy('octo', {'model_path': model}, spares=spares)
    try:
        remote.start()
        assert remote.warmup_seconds > 0  # one dummy inference ran before 'ready'
        assert spares.pid is not None  # a torch policy: the next swap finds torch imported
        frames = {cam: Frame(FRAME, 5.0) for cam in ('front', 'wrist')}
        chunk, error = remote.compute(frames, 'pick up the red cube', np.zeros(8, np.float32),
                                      30.0)
        assert error == '' and chunk.actions.shape == (4, 7)
    finally:
        remote.close()
        spare = spares.pid
        spares.close()
    assert spare is None or not os.path.exists(f'/proc/{spare}') or _is_zombie(spare)


def test_a_spare_process_serves_the_next_start():
    spares = SpareProcess()
    try:
        spares.replenish()
        pid = spares.pid
        assert pid is not None
        remote = RemotePolicy('scripted', SCRIPTED, spares=spares)
        remote.start()
        try:
            assert remote.pid == pid
            assert spares.pid is None  # a scripted policy needs no spare
            chunk, error = remote.compute({'front': Frame(FRAME, 1.0)}, 'go', None, 5.0)
            assert chunk is not None, error
        finally:
            remote.close()
        spares.replenish()
        pid = spares.pid
    finally:
        spares.close()
    assert not os.path.exists(f'/proc/{pid}') or _is_zombie(pid)


def _children(pid):
    """Process ids of ``pid``'s direct children (none once it has exited)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def _maps(pid):
    with open(f'/proc/{pid}/maps') as f:
        return f.read()


@pytest.mark.graph
@pytest.mark.parametrize('process_mode', [True, False])
def test_node_ctrl_c_is_clean_and_torch_stays_in_the_policy_process(
        ros_context, ros_env, python_exe, process_mode):
    """A torch policy producing chunks, then SIGINT: exit code 0, no traceback.

    Regression (issue 18, item 4): the worker published a chunk after Ctrl-C had shut the
    context down ("publisher's context is invalid"). In process mode the node process
    never maps libtorch; its policy process does, and it ends with the node.
    """
    import subprocess
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from vla_ros_msgs.msg import ActionChunk

    from vla_ros.models import model_path
    from vla_ros.nodes import qos
    from vla_ros.nodes.image_conversion import rgb_to_image_msg

    model = model_path('octo')
    ns = f'sigint_{int(process_mode)}'
    command = [python_exe, '-m', 'vla_ros.nodes.inference_node', '--ros-args',
               '-r', f'__ns:=/{ns}', '-p', 'policy:=octo', '-p', f'model_path:={model}',
               '-p', 'cameras:=[front, wrist]', '-p', 'use_joint_states:=true',
               '-p', 'inference_rate_hz:=30.0', '-p', 'control_rate_hz:=20.0',
               '-p', f'policy_process:={str(process_mode).lower()}']
    proc = subprocess.Popen(command, env=ros_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    node = rclpy.create_node('sigint_peer', namespace=ns, context=ros_context)
    chunks = []
    node.create_subscription(ActionChunk, 'vla/action_chunk', chunks.append, qos.STATUS)
    cams = {c: node.create_publisher(Image, f'camera/{c}/image_raw', qos.SENSOR)
            for c in ('front', 'wrist')}
    joints = node.create_publisher(JointState, 'joint_states', qos.SENSOR)
    instruction = node.create_publisher(String, 'instruction', qos.INSTRUCTION)
    frame = np.full((64, 64, 3), 100, np.uint8)

    def feed():
        stamp = node.get_clock().now().nanoseconds * 1e-9
        for pub in cams.values():
            pub.publish(rgb_to_image_msg(frame, stamp=stamp))
        joints.publish(JointState(name=[f'j{i}' for i in range(8)], position=[0.0] * 8))

    node.create_timer(0.05, feed)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        instruction.publish(String(data='pick up the red cube'))
        assert wait_for(lambda: len(chunks) >= 5 or proc.poll() is not None, 90), \
            f'no chunks; node stderr: {proc.stderr.read() if proc.poll() is not None else ""}'
        assert all(c.policy == 'octo' for c in chunks)
        kids = _children(proc.pid)
        if process_mode:
            assert 'libtorch' not in _maps(proc.pid)
            assert any('libtorch' in _maps(k) for k in kids), kids
        time.sleep(0.3)  # chunks in flight while the signal lands
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        executor.shutdown()
        node.destroy_node()
    assert 'Traceback' not in err, err
    assert proc.returncode == 0, err
    assert wait_for(lambda: not any(os.path.exists(f'/proc/{k}') and not _is_zombie(k)
                                    for k in kids), 5)


def test_policy_process_preprocesses_frames_as_the_engine_does():
    # Both modes must feed a policy the same pixels, including OpenVLA's Pillow resizing.
    from vla_ros.images import RESIZE_METHODS
    from vla_ros.runtime.engine import _default_preprocess
    from vla_ros.runtime.policy_process import _preprocess

    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for method in RESIZE_METHODS:
        in_process = _preprocess(rgb, (32, 32), method)
        assert in_process.shape == (32, 32, 3)
        np.testing.assert_array_equal(in_process, _default_preprocess(rgb, (32, 32), method))
    # The methods differ (else this test would not tell whether the method is passed on).
    assert not np.array_equal(_preprocess(rgb, (32, 32), 'default'),
                              _preprocess(rgb, (32, 32), 'resize-crop'))


def test_frames_are_read_in_place_and_only_a_kept_view_is_copied():
    # The process reads the node's segment without copying; a frame already at the
    # policy's size would reach the policy as that very memory, which the node overwrites
    # with its next frame, so that one (and only that one) is copied.
    from vla_ros.runtime.policy_process import SharedFrames, _preprocess
    from vla_ros.runtime.remote_policy import _FrameSlots

    slots, shared = _FrameSlots(), SharedFrames()
    try:
        first = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        name, shape = slots.write('front', first)
        view = shared.read('front', name, shape)
        assert not view.flags.writeable
        np.testing.assert_array_equal(view, first)
        kept = _preprocess(view, (64, 48))  # already the policy's size
        resized = _preprocess(view, (32, 24))
        assert not np.may_share_memory(kept, view) and kept.flags.writeable
        before = resized.copy()
        slots.write('front', np.zeros_like(first))  # the node's next frame, same segment
        np.testing.assert_array_equal(view, 0)  # in place: no copy was made on read
        np.testing.assert_array_equal(kept, first)
        np.testing.assert_array_equal(resized, before)
    finally:
        slots.close()


# ------------------------------------------------- second camera prepared while idle
@pytest.fixture
def pixel_remote(remote_factory):
    from vla_ros.policies.registry import register_policy, unregister_policy

    register_policy('test_pixel', 'pixel_policy:PixelPolicy', 'test: pixel sums',
                    'scripted')
    here = os.path.dirname(os.path.abspath(__file__))  # the policy process imports it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (here, os.environ.get('PYTHONPATH', '')) if p))
    yield lambda: remote_factory('test_pixel', env=env, chunk_length=4)
    unregister_policy('test_pixel')


def _frame(seed, stamp, shape=(48, 64, 3)):
    return Frame(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), stamp)


def _local_chunk(front, wrist):
    """What the policy computes in-process on these frames (the engine's preprocessing)."""
    from pixel_policy import PixelPolicy

    from vla_ros.runtime.engine import _default_preprocess, predict_chunk

    chunk, error = predict_chunk(PixelPolicy(chunk_length=4), 'test_pixel',
                                 {'front': front, 'wrist': wrist}, 'go', None,
                                 _default_preprocess)
    assert error == ''
    return chunk.actions


def test_a_prepared_second_camera_gives_the_same_chunk(pixel_remote):
    remote = pixel_remote()
    front, wrist = _frame(1, 5.0), _frame(2, 4.9)
    frames = {'front': front, 'wrist': wrist}
    assert remote.prepare(frames) == 1  # the wrist only: the front starts requests
    assert remote.prepare(frames) == 0  # sent already
    chunk, error = remote.compute(frames, 'go', None, 5.0)
    assert error == '' and remote.last_prepared_used == 1
    np.testing.assert_allclose(chunk.actions, _local_chunk(front, wrist), rtol=1e-6)
    # A newer wrist frame than the prepared one: sent with the request as usual.
    newer = _frame(3, 5.1)
    chunk, error = remote.compute({'front': front, 'wrist': newer}, 'go', None, 5.0)
    assert error == '' and remote.last_prepared_used == 0
    np.testing.assert_allclose(chunk.actions, _local_chunk(front, newer), rtol=1e-6)
    assert not np.allclose(chunk.actions, _local_chunk(front, wrist))
    # One prepare per camera until the next answer; then the next frame may go.
    assert remote.prepare({'front': front, 'wrist': _frame(4, 5.2)}) == 1
    assert remote.prepare({'front': front, 'wrist': _frame(5, 5.3)}) == 0
    chunk, error = remote.compute({'front': front, 'wrist': newer}, 'go', None, 5.0)
    assert error == '' and remote.last_prepared_used == 0
    np.testing.assert_allclose(chunk.actions, _local_chunk(front, newer), rtol=1e-6)
    assert remote.prepare({'front': front, 'wrist': _frame(5, 5.3)}) == 1


def test_a_frame_that_fails_to_prepare_fails_the_request_as_it_would_have(pixel_remote):
    remote = pixel_remote()
    front, bad = _frame(1, 5.0), _frame(2, 5.0, shape=(48, 64, 4))
    _, usual = remote.compute({'front': front, 'wrist': bad}, 'go', None, 5.0)
    assert 'HxWx3' in usual
    assert remote.prepare({'front': front, 'wrist': bad}) == 1
    chunk, error = remote.compute({'front': front, 'wrist': bad}, 'go', None, 5.0)
    assert chunk is None and error == usual and remote.ready


def test_a_restarted_process_is_sent_the_frames_again(pixel_remote):
    remote = pixel_remote()
    front, wrist = _frame(1, 5.0), _frame(2, 5.0)
    assert remote.prepare({'front': front, 'wrist': wrist}) == 1
    os.kill(remote.pid, signal.SIGKILL)
    assert wait_for(lambda: not remote.ready, 10)
    assert 'SIGKILL' in remote.take_failure()
    remote.restart()
    chunk, error = remote.compute({'front': front, 'wrist': wrist}, 'go', None, 5.0)
    assert error == '' and remote.last_prepared_used == 0
    np.testing.assert_allclose(chunk.actions, _local_chunk(front, wrist), rtol=1e-6)


def test_the_worker_prepares_the_second_camera_while_the_policy_is_idle():
    from vla_ros.policies.scripted import ScriptedPolicy

    class Recording(FakeRemote):
        def __init__(self, spec):
            super().__init__(spec, [])
            self.prepared = []

        def prepare(self, frames):
            self.prepared.append({cam: f.stamp for cam, f in frames.items()})
            return 0

    clock = Clock()
    spec = ScriptedPolicy(**SCRIPTED, camera_names=('front', 'wrist')).spec
    engine = InferenceEngine(EngineConfig())
    remote = Recording(spec)
    engine.finish_policy_load('scripted', remote)
    engine.set_instruction('go')
    worker = ProcessInferenceWorker(engine, clock, poll_period=0.01)
    worker.start()
    try:
        # No front frame: nothing to infer, so the idle worker offers what there is.
        engine.set_image('wrist', np.zeros((48, 64, 3), np.uint8), clock())
        worker.wake()
        assert wait_for(lambda: {'wrist': clock()} in remote.prepared, 5)
    finally:
        worker.stop()
