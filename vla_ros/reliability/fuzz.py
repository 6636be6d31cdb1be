"""Property-based fuzzing of the inference and driver nodes through a real rclpy graph.

Each harness runs the real node(s) (observed subclasses that record every input callback),
a dry-run driver, a :class:`~vla_ros.reliability.graph.CommandMonitor` and a peer node that
publishes the fuzzed messages. A ``check_*`` method sends one case through DDS, waits until
the node's callback has run, and asserts the properties:

* the case was either accepted, when an independent validity rule says it is valid, or
  rejected with a stated reason (status / log text);
* no exception escaped a callback and every node is still being spun, with control ticks
  still flowing;
* no command outside the configured limits was sent (monitor count stays 0).

Hypothesis strategies for every input are defined here too, so the tests (``@given``) and
``vla-ros bench faults`` (:func:`run_fuzz`) draw the same cases.
"""

from __future__ import annotations

import collections
import json
import math
import unicodedata
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from vla_ros.reliability.graph import (
    CommandMonitor,
    ObservedDriverNode,
    ObservedInferenceNode,
    SpinningGraph,
    wait_until,
    wall_time,
)
from vla_ros.reliability.invariants import Envelope, velocity_violations

# Hypothesis settings of every fuzz target: reproducible (derandomized, no example
# database), no per-example deadline (graph round trips vary with machine load).
FUZZ_SETTINGS = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))

# Encodings the converter supports (bytes per pixel), and some it must refuse.
BYTES_PER_PIXEL = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, 'mono16': 2,
                   '16uc1': 2, '32fc1': 4}
ODD_ENCODINGS = ('', 'RGB8', ' bgr8 ', 'yuv422', 'bayer_rggb8', '8UC3', '32FC3', 'jpeg',
                 'rgb8\x00junk', 'rgb16', '64FC1')
UINT32_MAX = 2**32 - 1
MAX_INSTRUCTION_CHARS = 2000
CAMERA_SIZE = (64, 48)  # (width, height) of the good camera stream and the policy input


def ros_string(text: str) -> str:
    """What a ROS string field holds after transport (C strings end at the first NUL)."""
    return text.split('\x00', 1)[0]


# ---------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class RawImageCase:
    """A sensor_msgs/Image with possibly inconsistent fields."""

    encoding: str
    width: int
    height: int
    step: int
    data_size: int
    fill: str
    seed: int
    is_bigendian: int
    stamp_offset: float | None  # seconds from now; None = zero stamp

    def data(self) -> bytes:
        """The payload bytes."""
        n = self.data_size
        if self.fill == 'zeros':
            return bytes(n)
        if self.fill in ('nan', 'inf', 'huge'):
            value = {'nan': np.nan, 'inf': np.inf, 'huge': 3e38}[self.fill]
            raw = np.full(n // 4 + 1, value, dtype=np.float32).tobytes()
            return raw[:n]
        return np.random.default_rng(self.seed).integers(0, 256, n, dtype=np.uint8).tobytes()

    def valid(self) -> bool:
        """Independent rule: a known encoding, non-empty, rows and data long enough."""
        key = ros_string(self.encoding).strip().lower()
        if key not in BYTES_PER_PIXEL or self.width == 0 or self.height == 0:
            return False
        return self.step >= self.width * BYTES_PER_PIXEL[key] and \
            self.data_size >= self.step * self.height


@dataclass(frozen=True)
class CompressedCase:
    """A sensor_msgs/CompressedImage: a real encoding, damaged or not, or garbage."""

    format: str
    payload: bytes
    kind: str


@dataclass(frozen=True)
class InstructionCase:
    """An instruction as text, or as raw serialized bytes (invalid UTF-8 on the wire)."""

    text: str = ''
    raw_utf8: bytes | None = None

    def received(self) -> str:
        """The text the subscriber sees (rclpy decodes invalid UTF-8 with U+FFFD)."""
        if self.raw_utf8 is not None:
            return ros_string(self.raw_utf8.split(b'\x00', 1)[0].decode('utf-8', 'replace'))
        return ros_string(self.text)

    def serialized(self) -> bytes:
        """CDR of std_msgs/String with ``raw_utf8`` as the payload."""
        body = self.raw_utf8.split(b'\x00', 1)[0] + b'\x00'
        return b'\x00\x01\x00\x00' + len(body).to_bytes(4, 'little') + body


def instruction_valid(text: str) -> bool:
    """Independent rule for instructions: non-blank, bounded, real text."""
    if not text.strip() or len(text) > MAX_INSTRUCTION_CHARS or '\ufffd' in text:
        return False
    return not any(unicodedata.category(c) == 'Cc' and c not in '\t\n\r' for c in text)


@dataclass(frozen=True)
class JointStateCase:
    """A sensor_msgs/JointState with names and positions of any lengths and values."""

    names: tuple
    positions: tuple
    velocities: tuple

    def valid(self) -> bool:
        """Independent rule: non-empty finite positions, one per name when named."""
        if not self.positions:
            return False
        if self.names and len(self.names) != len(self.positions):
            return False
        with np.errstate(over='ignore'):
            return bool(np.all(np.isfinite(np.asarray(self.positions, dtype=np.float32))))


@dataclass(frozen=True)
class TwistCase:
    """Six twist components (any float, NaN/Inf and huge values included)."""

    values: tuple

    def valid(self) -> bool:
        """Finite values are valid (the driver clamps them); NaN/Inf must be dropped."""
        return all(math.isfinite(v) for v in self.values)


# ---------------------------------------------------------------------- strategies
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
wild_float = st.one_of(any_float, st.sampled_from([0.0, 1e6, -1e6, 1e308, -1e308, 5e-324,
                                                   math.nan, math.inf, -math.inf]))


@st.composite
def raw_image_cases(draw) -> RawImageCase:
    """Images with wrong sizes, steps, encodings, empty or truncated data."""
    encoding = draw(st.one_of(st.sampled_from(sorted(BYTES_PER_PIXEL)),
                              st.sampled_from(['rgb8', 'bgr8', 'mono8', '32FC1', '16UC1']),
                              st.sampled_from(ODD_ENCODINGS), st.text(max_size=10)))
    width = draw(st.one_of(st.integers(0, 40), st.sampled_from([2**31, UINT32_MAX])))
    height = draw(st.one_of(st.integers(0, 30), st.sampled_from([2**31, UINT32_MAX])))
    bpp = BYTES_PER_PIXEL.get(ros_string(encoding).strip().lower()) or draw(st.integers(1, 4))
    row = min(width * bpp, UINT32_MAX)
    step = draw(st.one_of(st.just(row), st.integers(row, row + 8).map(
        lambda s: min(s, UINT32_MAX)), st.integers(0, max(row - 1, 0)),
        st.sampled_from([0, UINT32_MAX])))
    need = step * height
    cap = 40_000
    size = draw(st.one_of(st.just(min(need, cap)),
                          st.integers(0, min(need + 16, cap)),
                          st.integers(max(0, min(need, cap) - 8), min(need, cap))))
    return RawImageCase(
        encoding=encoding, width=width, height=height, step=step, data_size=size,
        fill=draw(st.sampled_from(['random', 'zeros', 'nan', 'inf', 'huge'])),
        seed=draw(st.integers(0, 2**16)), is_bigendian=draw(st.integers(0, 255)),
        stamp_offset=draw(st.sampled_from([0.0, 0.0, 0.0, -0.05, -100.0, 0.3, 1e6, None])))


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    import cv2

    ok, out = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', rgb)
    assert ok
    return out.tobytes()


@st.composite
def compressed_cases(draw) -> CompressedCase:
    """Compressed images that decode, are truncated, corrupted, empty or not images."""
    kind = draw(st.sampled_from(['valid', 'truncated', 'corrupted', 'garbage', 'empty',
                                 'depth', 'header_only']))
    fmt = draw(st.sampled_from(['jpeg', 'png']))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    encoded = _encode(rgb, fmt)
    if kind == 'valid':
        payload = encoded
    elif kind == 'truncated':
        payload = encoded[:draw(st.integers(0, max(len(encoded) - 1, 0)))]
    elif kind == 'corrupted':
        data = bytearray(encoded)
        for _ in range(draw(st.integers(1, 16))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        payload = bytes(data)
    elif kind == 'garbage':
        payload = draw(st.binary(max_size=512))
    elif kind == 'header_only':
        payload = encoded[:draw(st.integers(1, 32))]
    else:
        payload = b'' if kind == 'empty' else encoded
    if kind == 'depth':
        fmt = '16UC1; compressedDepth png'
    elif draw(st.booleans()):
        fmt = draw(st.one_of(st.text(max_size=16), st.sampled_from(['', 'rgb8; jpeg'])))
    return CompressedCase(fmt, payload, kind)


@st.composite
def instruction_cases(draw) -> InstructionCase:
    """Empty, blank, enormous, control-character, exotic-Unicode and invalid-UTF-8 text."""
    kind = draw(st.sampled_from(['text', 'blank', 'huge', 'limit', 'control', 'unicode',
                                 'invalid_utf8', 'words']))
    if kind == 'invalid_utf8':
        raw = draw(st.binary(min_size=1, max_size=64))
        prefix = draw(st.sampled_from([b'', b'pick up ', b'move ']))
        return InstructionCase(raw_utf8=prefix + raw)
    if kind == 'blank':
        text = draw(st.text(alphabet=' \t\n\r\x0b\x0c\u00a0\u2003', max_size=20))
    elif kind == 'huge':
        text = draw(st.sampled_from(['a', 'move ', '\u00e9'])) * draw(st.integers(2001, 200_000))
    elif kind == 'limit':
        text = 'x' * draw(st.integers(1990, 2010))
    elif kind == 'control':
        text = draw(st.text(alphabet=st.characters(codec='utf-8', categories=['Cc']),
                            min_size=1, max_size=20))
        text = draw(st.sampled_from(['', 'move ', 'go '])) + text
    elif kind == 'unicode':
        text = draw(st.text(alphabet=st.characters(codec='utf-8', exclude_categories=['Cs']),
                            min_size=1, max_size=60))
    elif kind == 'words':
        text = draw(st.sampled_from(['move forward', 'move back', 'stop', 'pick up the cube',
                                     'move the gripper left']))
    else:
        text = draw(st.text(max_size=80).filter(lambda s: all(
            unicodedata.category(c) != 'Cs' for c in s)))
    return InstructionCase(text=text)


@st.composite
def joint_state_cases(draw) -> JointStateCase:
    """Joint states with NaN/Inf/huge positions and mismatched lengths."""
    n = draw(st.integers(0, 9))
    m = draw(st.one_of(st.just(n), st.integers(0, 9)))
    positions = draw(st.lists(st.one_of(st.floats(-3, 3), wild_float), min_size=m, max_size=m))
    names = tuple(f'joint{i}' for i in range(n))
    velocities = tuple(draw(st.lists(wild_float, max_size=9)))
    return JointStateCase(names, tuple(positions), velocities)


def twist_cases() -> st.SearchStrategy:
    """Twist components: ordinary, huge, NaN and Inf."""
    component = st.one_of(st.floats(-0.5, 0.5), wild_float)
    return st.lists(component, min_size=6, max_size=6).map(lambda v: TwistCase(tuple(v)))


def any_parameter_value() -> st.SearchStrategy:
    """Values of every ROS parameter type, and out-of-range numbers."""
    return st.one_of(
        st.booleans(), st.integers(-2**63, 2**63 - 1), st.integers(-5, 5), wild_float,
        st.floats(-1.0, 10.0), st.text(max_size=20),
        st.lists(st.floats(allow_nan=True), max_size=5), st.lists(st.integers(-9, 9),
                                                                  max_size=5),
        st.lists(st.text(max_size=5), max_size=3), st.lists(st.booleans(), max_size=3),
        st.none())


def policy_params_values() -> st.SearchStrategy:
    """``policy_params`` text: bad YAML, non-mappings, unknown keys, bad values.

    Fault-injection knobs of the scripted policy (latency, fail_mode, hang) are left out:
    they inject faults on purpose, which the fault campaign covers.
    """
    number = st.one_of(st.integers(-5, 64), st.floats(-1.0, 2.0), wild_float, st.text(max_size=4))
    entries = st.fixed_dictionaries({}, optional={
        'chunk_length': number, 'control_period': number, 'gripper': number,
        'seed': number, 'noise': st.one_of(st.floats(-0.1, 0.01), st.text(max_size=3)),
        'pattern': st.sampled_from(['constant', 'sine', 'ramp', 'zigzag', '']),
        'velocity': st.lists(st.one_of(st.floats(-1e3, 1e3), wild_float), max_size=8),
        'image_size': st.lists(st.integers(-5, 96), max_size=3),
        'camera_names': st.one_of(st.just(['front']), st.just(['wrist']), st.just([]),
                                  st.just('front')),
        'action_space': st.sampled_from(['arm7', 'mobile_manipulator', 'nope', '']),
        'no_such_argument': st.integers(0, 3),
    })

    def dump(d):
        try:
            return json.dumps(d, allow_nan=True)
        except ValueError:
            return '{}'

    return st.one_of(entries.map(dump), st.text(max_size=40),
                     st.sampled_from(['{', '[1, 2]', '42', 'null', ': :', '{a: [}', '']))


# --------------------------------------------------------------------- harnesses
class FuzzFailure(AssertionError):
    """A fuzz case broke a property (the message says which and why)."""


def _require(condition, message):
    if not condition:
        raise FuzzFailure(message)


class _Harness:
    """Common part: the graph, the monitor, per-kind case counts, the after-case checks."""

    tick_timeout = 1.5  # s without a command before the node counts as stalled

    def _start_common(self, context, namespace, command_envelope, driver, watch_commands=True):
        import rclpy

        self.context = context
        self.namespace = namespace
        self.graph = SpinningGraph(context)
        self.cases = collections.Counter()
        self.rejected = collections.Counter()
        self.driver = self.graph.add(driver)
        self.monitor = self.graph.add(CommandMonitor(
            context, command_envelope, Envelope.from_limits(driver.limits),
            1.0 / driver.get_parameter('rate_hz').value, namespace=namespace,
            watch_commands=watch_commands))
        self.peer = rclpy.create_node('vla_fuzz_peer', namespace=namespace, context=context)
        self._tag = 0

    def next_tag(self) -> str:
        """A unique frame_id identifying one case."""
        self._tag += 1
        return f'fuzz-{self._tag}'

    def nodes(self):
        """The nodes that must survive."""
        return [self.driver]

    def assert_healthy(self, what: str) -> None:
        """No dead node, no unsafe command, commands still flowing."""
        _require(not self.graph.errors, f'{what}: a node died: {self.graph.errors}')
        for node in self.nodes():
            _require(self.graph.alive(node), f'{what}: node {node.get_name()} stopped spinning')
        unsafe = self.monitor.audit()
        _require(not unsafe, f'{what}: unsafe command(s): {unsafe[:3]}')
        latest = self.monitor.latest_applied()
        _require(latest is not None and wall_time() - latest[0] < self.tick_timeout,
                 f'{what}: the driver stopped ticking (last applied twist {latest})')

    def _processed(self, node, kind, tag, publish, attempts=3):
        """Publish until ``node`` ran its callback for ``tag`` (best-effort topics)."""
        for _ in range(attempts):
            publish()
            record = wait_until(lambda: node.find(kind, tag), 1.0)
            if record is not None:
                return record
        raise FuzzFailure(f'{kind} case {tag} was never processed by {node.get_name()}')

    def _count(self, kind, record):
        self.cases[kind] += 1
        if record.reasons:
            self.rejected[kind] += 1
        _require(not record.exception, f'{kind}: callback raised {record.exception}')

    def close(self) -> None:
        """Stop every node."""
        self.graph.close()
        self.peer.destroy_node()


class InferenceFuzzHarness(_Harness):
    """The inference node (scripted policy) fed by a good camera, a dry-run driver behind.

    ``image_transport='compressed'`` subscribes to compressed images instead of raw ones.
    """

    def __init__(self, context, namespace: str = 'fuzz_inference',
                 image_transport: str = 'raw'):
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import String

        from vla_ros.nodes import qos

        self.defaults = {
            'policy': 'scripted', 'control_rate_hz': 20.0, 'inference_rate_hz': 5.0,
            'stale_image_timeout': 0.5, 'use_joint_states': True,
            'image_transport': image_transport,
            # Fuzzing the node's inputs, not the policy process: a policy thread keeps
            # the hundreds of parameter changes from starting a process each.
            'policy_process': False,
            # Circles of ~5 cm: the arm keeps moving without reaching the workspace walls.
            'policy_params': json.dumps({'chunk_length': 8, 'image_size': list(CAMERA_SIZE),
                                         'pattern': 'sine', 'velocity': [0.01, 0.01, 0.0]}),
        }
        self.inference = ObservedInferenceNode(
            context=context, namespace=namespace,
            parameter_overrides=[Parameter(k, value=v) for k, v in self.defaults.items()])
        limits = self.inference.command_limits
        driver = ObservedDriverNode(context=context, namespace=namespace, parameter_overrides=[
            Parameter('backend', value='dry_run'), Parameter('camera_rate_hz', value=0.0)])
        self._start_common(context, namespace, Envelope.from_limits(limits, False), driver)
        self.monitor.base_limits = (limits.max_base_linear_velocity,
                                    limits.max_base_angular_velocity)
        self.graph.add(self.inference)
        self.compressed = image_transport == 'compressed'
        peer = self.peer
        if self.compressed:
            self.image_pub = peer.create_publisher(
                CompressedImage, 'camera/front/image_raw/compressed', qos.SENSOR)
        else:
            self.image_pub = peer.create_publisher(Image, 'camera/front/image_raw', qos.SENSOR)
        self.instruction_pub = peer.create_publisher(String, 'instruction', qos.INSTRUCTION)
        self.joint_pub = peer.create_publisher(JointState, 'joint_states', qos.SENSOR)
        self.camera_on = True
        self._frame = np.full((CAMERA_SIZE[1], CAMERA_SIZE[0], 3), 90, dtype=np.uint8)
        peer.create_timer(0.05, self._publish_good_frame)
        self.graph.add(peer)
        self._closed_peer = False

    def nodes(self):
        """The inference node and the driver."""
        return [self.inference, self.driver]

    def assert_healthy(self, what: str) -> None:
        """Also: the inference node still publishes a command on every control tick."""
        super().assert_healthy(what)
        latest = self.monitor.latest_command()
        _require(latest is not None and wall_time() - latest[1] < self.tick_timeout,
                 f'{what}: the inference node stopped publishing commands ({latest})')

    def _publish_good_frame(self):
        from vla_ros.nodes.image_conversion import rgb_to_compressed_msg, rgb_to_image_msg

        if self.camera_on:
            make = rgb_to_compressed_msg if self.compressed else rgb_to_image_msg
            self.image_pub.publish(make(self._frame, stamp=wall_time(), frame_id='good'))

    def instruct(self, text: str) -> None:
        """Publish a (good) instruction and wait until the node has it."""
        from std_msgs.msg import String

        before = self.inference.count('instruction')
        self.instruction_pub.publish(String(data=text))
        _require(wait_until(lambda: self.inference.count('instruction') > before, 10.0),
                 f'instruction {text!r} never arrived')

    def wait_moving(self, timeout: float = 8.0) -> bool:
        """Wait until the inference node commands motion and the driver applies it."""
        def moving():
            cmd, applied = self.monitor.latest_command(), self.monitor.latest_applied()
            return cmd is not None and np.linalg.norm(cmd[2][:3]) > 0.05 and \
                applied is not None and np.linalg.norm(applied[1][:3]) > 0.05
        return bool(wait_until(moving, timeout, 0.01))

    def _assert_reason(self, kind, record, prefix):
        _require(record.reasons, f'{kind} case {record.tag}: rejected without a reason')
        reason = record.reasons[0]
        _require(reason.startswith(prefix) and len(reason) > len(prefix) + 5,
                 f'{kind} case {record.tag}: unclear reason {reason!r}')

    # ------------------------------------------------------------------ checks
    def check_raw_image(self, case: RawImageCase) -> None:
        """One malformed (or valid) raw image."""
        from builtin_interfaces.msg import Time
        from sensor_msgs.msg import Image

        tag = self.next_tag()
        msg = Image(height=case.height, width=case.width, encoding=case.encoding,
                    is_bigendian=case.is_bigendian, step=case.step, data=case.data())
        msg.header.frame_id = tag
        if case.stamp_offset is not None:
            ns = max(int((wall_time() + case.stamp_offset) * 1e9), 0)
            msg.header.stamp = Time(sec=min(ns // 10**9, 2**31 - 1), nanosec=ns % 10**9)
        record = self._processed(self.inference, 'image', tag,
                                 lambda: self.image_pub.publish(msg))
        self._count('image', record)
        if case.valid():
            _require(not record.reasons, f'valid image {case} rejected: {record.reasons}')
        else:
            self._assert_reason('image', record, "camera 'front': ")
        self.assert_healthy(f'image {case}')

    def check_compressed(self, case: CompressedCase) -> None:
        """One compressed image (valid, damaged or garbage)."""
        import cv2
        from sensor_msgs.msg import CompressedImage

        tag = self.next_tag()
        msg = CompressedImage(format=case.format, data=case.payload)
        msg.header.frame_id = tag
        record = self._processed(self.inference, 'compressed', tag,
                                 lambda: self.image_pub.publish(msg))
        self._count('compressed', record)
        decodable = bool(case.payload) and \
            'compresseddepth' not in ros_string(case.format).lower() and \
            cv2.imdecode(np.frombuffer(case.payload, np.uint8), cv2.IMREAD_COLOR) is not None
        if decodable:
            _require(not record.reasons, f'decodable {case.kind} image rejected: '
                                         f'{record.reasons}')
        else:
            self._assert_reason('compressed', record, "camera 'front': ")
        if case.kind in ('empty', 'depth'):
            _require(record.reasons, f'{case.kind} compressed image accepted')
        self.assert_healthy(f'compressed {case.kind} {case.format!r}')

    def check_instruction(self, case: InstructionCase) -> None:
        """One instruction (possibly empty, huge, control characters, invalid UTF-8)."""
        from std_msgs.msg import String

        before = self.inference.count('instruction')
        message = case.serialized() if case.raw_utf8 is not None else String(data=case.text)
        self.instruction_pub.publish(message)
        _require(wait_until(lambda: self.inference.count('instruction') > before, 3.0),
                 f'instruction case {case!r:.80} never processed')
        record = self.inference.latest('instruction')
        self._count('instruction', record)
        received = case.received()
        if instruction_valid(received):
            _require(not record.reasons, f'valid instruction {received!r:.80} rejected: '
                                         f'{record.reasons}')
            current = self.inference.engine.status(wall_time()).instruction
            _require(current == received.strip(), f'instruction not taken: {current!r:.80}')
        else:
            self._assert_reason('instruction', record, 'rejected ')
        self.assert_healthy(f'instruction {received!r:.60}')

    def check_joint_states(self, case: JointStateCase) -> None:
        """One joint state message with any lengths and values."""
        from sensor_msgs.msg import JointState

        tag = self.next_tag()
        msg = JointState(name=list(case.names), position=list(case.positions),
                         velocity=list(case.velocities))
        msg.header.frame_id = tag
        record = self._processed(self.inference, 'joint_states', tag,
                                 lambda: self.joint_pub.publish(msg))
        self._count('joint_states', record)
        if case.valid():
            _require(not record.reasons, f'valid joint state {case} rejected: {record.reasons}')
        else:
            self._assert_reason('joint_states', record, 'joint_states: ')
        self.assert_healthy(f'joint_states {case}')

    def check_parameter(self, name: str, value) -> None:
        """Set one parameter to ``value``; refused with a reason, or valid and applied."""
        result = _set_parameter(self.inference, name, value)
        self.cases['parameter'] += 1
        if result is None or not result.successful:
            self.rejected['parameter'] += 1
            _require(result is not None and result.reason.strip(),
                     f'parameter {name}={value!r} refused without a reason')
        else:
            _require(_parameter_fits(self.inference, name, value),
                     f'parameter {name}={value!r} accepted but out of its declared range')
            if name.startswith('max_'):
                self.monitor.set_command_envelope(
                    Envelope.from_limits(self.inference.command_limits, False), wall_time())
                limits = self.inference.command_limits
                self.monitor.base_limits = (limits.max_base_linear_velocity,
                                            limits.max_base_angular_velocity)
        self.assert_healthy(f'parameter {name}={value!r:.60}')

    def restore_defaults(self) -> None:
        """Put every writable parameter back to its default (after parameter fuzzing)."""
        from rclpy.parameter import Parameter

        for name, value in self._initial_values().items():
            self.inference.set_parameters([Parameter(name, value=value)])
        self.monitor.set_command_envelope(
            Envelope.from_limits(self.inference.command_limits, False), wall_time())

    def _initial_values(self):
        if not hasattr(self, '_initial'):
            self._initial = {}
            for name in writable_parameters(self.inference):
                self._initial[name] = self.inference.get_parameter(name).value
        return self._initial


class DriverFuzzHarness(_Harness):
    """A dry-run driver with a mobile base, fed fuzzed commands directly."""

    def __init__(self, context, namespace: str = 'fuzz_driver'):
        from geometry_msgs.msg import TwistStamped
        from rclpy.parameter import Parameter
        from std_msgs.msg import Bool
        from std_srvs.srv import Trigger
        from vla_ros_msgs.msg import GripperCommand

        from vla_ros.nodes import qos

        driver = ObservedDriverNode(context=context, namespace=namespace, parameter_overrides=[
            Parameter('backend', value='dry_run'), Parameter('camera_rate_hz', value=0.0),
            Parameter('mobile', value=True)])
        limits = driver.limits
        self._start_common(context, namespace, Envelope.from_limits(limits, False), driver,
                           watch_commands=False)
        peer = self.peer
        self.twist_pub = peer.create_publisher(TwistStamped, 'cmd/ee_twist', qos.COMMAND)
        self.gripper_pub = peer.create_publisher(GripperCommand, 'cmd/gripper', qos.COMMAND)
        self.base_pub = peer.create_publisher(TwistStamped, 'cmd_vel', qos.COMMAND)
        self.estop_pub = peer.create_publisher(Bool, 'estop', qos.LATCHED)
        self.clear_client = peer.create_client(Trigger, 'vla_driver/clear_estop')
        self.graph.add(peer)
        self._limit_history = [(-math.inf, limits)]
        _require(wait_until(lambda: self.twist_pub.get_subscription_count() > 0
                            and self.monitor.latest_applied() is not None, 10.0),
                 'driver not discovered')

    def _twist_msg(self, values, tag):
        from geometry_msgs.msg import TwistStamped

        msg = TwistStamped()
        msg.header.stamp = self.peer.get_clock().now().to_msg()
        msg.header.frame_id = tag
        t, a = msg.twist.linear, msg.twist.angular
        t.x, t.y, t.z, a.x, a.y, a.z = (float(v) for v in values)
        return msg

    def _bounds_at(self, when: float):
        """Loosest (linear, angular, base linear, base angular) limits in force near ``when``."""
        grace = self.monitor.applied_checker.grace
        active = [lim for t, lim in self._limit_history if t <= when]
        window = active[-1:] + [lim for t, lim in self._limit_history if when - grace < t]
        return tuple(max(getattr(lim, name) for lim in window) for name in (
            'max_linear_velocity', 'max_angular_velocity', 'max_base_linear_velocity',
            'max_base_angular_velocity'))

    def assert_backend_safe(self, what: str) -> None:
        """Everything sent to the backend: finite, within limits, gripper in [0, 1]."""
        for when, twist, gripper, base in self.driver.take_sent():
            linear, angular, base_linear, base_angular = self._bounds_at(when)
            reasons = velocity_violations(twist, Envelope(linear, angular))
            _require(not reasons, f'{what}: backend got {twist.tolist()}: {reasons}')
            _require(gripper is None or (math.isfinite(gripper) and 0.0 <= gripper <= 1.0),
                     f'{what}: backend got gripper {gripper}')
            if base is not None:
                ok = bool(np.all(np.isfinite(base))) and \
                    np.linalg.norm(base[:2]) <= base_linear + 1e-6 and \
                    abs(base[2]) <= base_angular + 1e-6
                _require(ok, f'{what}: backend got base twist {base.tolist()}')

    def _check_command(self, kind, publisher, msg, valid, what):
        def publish():
            if hasattr(msg.header.stamp, 'sec') and kind != 'gripper':
                msg.header.stamp = self.peer.get_clock().now().to_msg()  # fresh per attempt
            publisher.publish(msg)

        record = self._processed(self.driver, kind, msg.header.frame_id, publish)
        self._count(kind, record)
        if valid:
            _require(not record.reasons, f'{what}: valid command dropped: {record.reasons}')
        else:
            reason = record.reasons[0].lower() if record.reasons else ''
            _require(reason.startswith('dropping command: ') and
                     ('finite' in reason or 'nan' in reason),
                     f'{what}: invalid command without a clear reason: {record.reasons}')
        self.assert_healthy(what)
        self.assert_backend_safe(what)

    def check_ee_twist(self, case: TwistCase) -> None:
        """One end-effector twist (NaN/Inf must be dropped, the rest clamped)."""
        msg = self._twist_msg(case.values, self.next_tag())
        self._check_command('ee_twist', self.twist_pub, msg, case.valid(),
                            f'ee_twist {case.values}')

    def check_cmd_vel(self, case: TwistCase) -> None:
        """One base twist."""
        msg = self._twist_msg(case.values, self.next_tag())
        used = (case.values[0], case.values[1], case.values[5])
        valid = all(math.isfinite(v) for v in case.values)
        self._check_command('cmd_vel', self.base_pub, msg, valid, f'cmd_vel {used}')

    def check_gripper(self, position: float, effort: float) -> None:
        """One gripper command (NaN/Inf dropped, the rest clamped to [0, 1])."""
        from vla_ros_msgs.msg import GripperCommand

        msg = GripperCommand(position=float(position), max_effort=float(effort))
        msg.header.frame_id = self.next_tag()
        valid = math.isfinite(position) and math.isfinite(effort)
        self._check_command('gripper', self.gripper_pub, msg, valid,
                            f'gripper {position}, {effort}')

    def check_estop_sequence(self, values) -> None:
        """Publish e-stop values; any True latches a stop that only the service clears."""
        from std_msgs.msg import Bool
        from std_srvs.srv import Trigger

        for value in values:
            before = self.driver.count('estop')
            self.estop_pub.publish(Bool(data=bool(value)))
            _require(wait_until(lambda: self.driver.count('estop') > before, 3.0),  # noqa: B023
                     'estop message never processed')
            self.cases['estop'] += 1
        engaged = any(values)
        _require(self.driver.estop_engaged == engaged,
                 f'estop {values}: engaged={self.driver.estop_engaged}')
        if engaged:
            t0 = wall_time() + 0.05
            # Ask for motion: the latched stop must win.
            self.twist_pub.publish(self._twist_msg([0.1, 0, 0, 0, 0, 0], 'estop-probe'))
            wait_until(lambda: len(self.monitor.applied_since(t0)) >= 3, 2.0)
            moving = [t for _, t in self.monitor.applied_since(t0) if np.any(t != 0)]
            _require(not moving, f'moved during e-stop: {moving[:2]}')
            _require(self.clear_client.wait_for_service(timeout_sec=3.0), 'no clear service')
            future = self.clear_client.call_async(Trigger.Request())
            _require(wait_until(future.done, 3.0), 'clear_estop did not answer')
            _require(not self.driver.estop_engaged, 'e-stop did not clear')
        self.assert_healthy(f'estop {values}')

    def check_parameter(self, name: str, value) -> None:
        """Set one driver parameter; refused with a reason, or valid and in force."""
        self.assert_backend_safe(f'before parameter {name}')
        result = _set_parameter(self.driver, name, value)
        self.cases['parameter'] += 1
        if result is None or not result.successful:
            self.rejected['parameter'] += 1
            _require(result is not None and result.reason.strip(),
                     f'parameter {name}={value!r} refused without a reason')
        else:
            _require(_parameter_fits(self.driver, name, value),
                     f'parameter {name}={value!r} accepted but out of its declared range')
            limits = self.driver.limits
            self._limit_history.append((wall_time(), limits))
            _require(all(a < b for a, b in zip(limits.workspace_min, limits.workspace_max,
                                                strict=True)),
                     f'{name}={value!r} left an empty workspace {limits}')
            self.monitor.applied_checker.set_envelope(Envelope.from_limits(limits),
                                                      wall_time())
        self.assert_healthy(f'parameter {name}={value!r:.60}')
        self.assert_backend_safe(f'parameter {name}={value!r:.60}')


# ------------------------------------------------------------------ parameters
def writable_parameters(node) -> list[str]:
    """Declared parameters that are not read-only (use_sim_time left out)."""
    names = []
    for name in sorted(node._parameters):
        if name == 'use_sim_time':
            continue
        if not node.describe_parameter(name).read_only:
            names.append(name)
    return names


def _set_parameter(node, name, value):
    from rclpy.parameter import Parameter

    try:
        parameter = Parameter(name, value=value)
    except (TypeError, ValueError):
        return None  # not representable as a ROS parameter at all: nothing to send
    return node.set_parameters([parameter])[0]


_TYPE_OF = {bool: 1, int: 2, float: 3, str: 4}


def _parameter_fits(node, name, value) -> bool:
    """Independent check of an accepted value: declared type, range, not read-only."""
    from rclpy.parameter import Parameter

    descriptor = node.describe_parameter(name)
    if descriptor.read_only:
        return False
    declared = descriptor.type  # the declared type, also of a parameter still unset
    if Parameter(name, value=value).type_ != declared:
        return False
    if isinstance(value, float) and not math.isfinite(value) and (
            descriptor.floating_point_range):
        return False
    for r in descriptor.floating_point_range:
        if not r.from_value - 1e-9 <= value <= r.to_value + 1e-9:
            return False
    for r in descriptor.integer_range:
        if not r.from_value <= value <= r.to_value:
            return False
    return True


def _current_value(node, name):
    """A parameter's value; None while it is declared without one (e.g. joint limits)."""
    from rclpy.exceptions import ParameterUninitializedException

    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return None


def parameter_cases(node, policy_names=('scripted',)) -> st.SearchStrategy:
    """(name, value) pairs over every writable parameter of ``node``.

    ``policy`` only ever gets ``policy_names`` or random names, so no heavy model loads.
    """
    names = writable_parameters(node)
    plain = st.tuples(st.sampled_from(names), any_parameter_value())
    special = []
    if 'policy' in names:
        from vla_ros.policies.registry import available_policies

        known = set(available_policies())
        special.append(st.tuples(st.just('policy'), st.one_of(
            st.sampled_from(list(policy_names)),
            st.text(max_size=20).filter(lambda s: s not in known or s in policy_names))))
        plain = plain.filter(lambda c: c[0] != 'policy' or not isinstance(c[1], str) or
                             c[1] in policy_names or c[1] not in known)
    if 'policy_params' in names:
        special.append(st.tuples(st.just('policy_params'), policy_params_values()))
    if 'workspace_min' in names:
        triple = st.lists(st.one_of(st.floats(-1.0, 1.5), wild_float), min_size=2, max_size=4)
        special.append(st.tuples(st.sampled_from(['workspace_min', 'workspace_max']), triple))
    for name in names:
        declared = _current_value(node, name)
        if isinstance(declared, float) and not isinstance(declared, bool):
            special.append(st.tuples(st.just(name), st.floats(-1.0, 3.0 * max(declared, 1.0))))
    return st.one_of(plain, *special)


# ----------------------------------------------------------------- campaign
def run_fuzz(context, examples: int = 50, seed: int = 0) -> dict:
    """Run every fuzz target with ``examples`` cases each; return counts and verdicts.

    Used by ``vla-ros bench faults``; the tests run the same checks under ``@given``.
    """
    from hypothesis import given

    config = settings(FUZZ_SETTINGS, max_examples=examples, print_blob=False)
    results = {'cases': {}, 'rejected_with_reason': {}, 'failures': []}

    def run(label, harness, strategy, check):
        @config
        @given(strategy)
        def body(case):
            check(*case) if isinstance(case, tuple) else check(case)
        try:
            body()
        except Exception as exc:  # noqa: BLE001 - report, keep fuzzing the other targets
            text = f'{label}: {type(exc).__name__}: {exc}'
            causes = [str(e) for e in getattr(exc, 'exceptions', [])]  # FlakyFailure group
            if causes:
                text += ' | causes: ' + ' | '.join(c[-400:] for c in causes)
            results['failures'].append(text if len(text) < 1500 else
                                       text[:500] + ' ... ' + text[-900:])

    inference = InferenceFuzzHarness(context)
    try:
        inference.instruct('move forward')
        _require(inference.wait_moving(), 'inference harness never moved')
        run('image', inference, raw_image_cases(), inference.check_raw_image)
        run('instruction', inference, instruction_cases(), inference.check_instruction)
        run('joint_states', inference, joint_state_cases(), inference.check_joint_states)
        inference._initial_values()
        run('parameter', inference, parameter_cases(inference.inference),
            inference.check_parameter)
        inference.restore_defaults()
        inference.instruct('move forward')
        recovered = inference.wait_moving()
        _collect(results, 'inference', inference, recovered)
    finally:
        inference.close()
    compressed = InferenceFuzzHarness(context, 'fuzz_compressed', 'compressed')
    try:
        compressed.instruct('move forward')
        _require(compressed.wait_moving(), 'compressed harness never moved')
        run('compressed', compressed, compressed_cases(), compressed.check_compressed)
        _collect(results, 'inference_compressed', compressed, compressed.wait_moving())
    finally:
        compressed.close()
    driver = DriverFuzzHarness(context)
    try:
        run('ee_twist', driver, twist_cases(), driver.check_ee_twist)
        run('cmd_vel', driver, twist_cases(), driver.check_cmd_vel)
        run('gripper', driver, st.tuples(wild_float, wild_float), driver.check_gripper)
        run('estop', driver, st.lists(st.booleans(), min_size=1, max_size=3).map(
            lambda v: (tuple(v),)), driver.check_estop_sequence)
        run('driver_parameter', driver, parameter_cases(driver.driver), driver.check_parameter)
        _collect(results, 'driver', driver, True)
    finally:
        driver.close()
    from vla_ros.reliability.fuzz_joints import JointDriverFuzzHarness, joint_command_cases

    joints = JointDriverFuzzHarness(context)  # joint-space robots: cmd/joint
    try:
        run('joint_command', joints, joint_command_cases(), joints.check_joint_command)
        joints.check_hold_after_stop()
        _collect(results, 'driver_joint', joints, True)
        results['joint_commands_checked'] = joints.checked
    finally:
        joints.close()
    results['total_cases'] = sum(results['cases'].values())
    return results


def _collect(results, label, harness, recovered):
    for kind, n in harness.cases.items():
        key = f'{label}.{kind}'
        results['cases'][key] = results['cases'].get(key, 0) + n
        results['rejected_with_reason'][key] = harness.rejected[kind]
    results.setdefault('unsafe_commands', 0)
    results['unsafe_commands'] += len(harness.monitor.audit())
    results.setdefault('applied_twists_checked', 0)
    results['applied_twists_checked'] += harness.monitor.applied_checker.checked
    results.setdefault('dead_nodes', [])
    results['dead_nodes'] += harness.graph.errors
    results.setdefault('recovered', {})[label] = bool(recovered)
