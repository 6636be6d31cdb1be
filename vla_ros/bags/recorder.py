"""Record topics into a rosbag2 bag with rclpy (``vla-ros bag record``).

Hot path: one raw subscription per topic (``raw=True``: the callback receives the CDR
bytes, nothing is deserialized) whose callback only appends ``(topic, receive time,
bytes)`` to a queue. A writer thread drains the queue into :class:`BagWriter` and flushes
every ``flush_interval`` (the crash-safety guarantee is in :mod:`vla_ros.bags.writer`).
Topic discovery (names, types, offered QoS) runs in a 100 ms timer, never per message.
A topic is subscribed once it has a publisher, with the QoS its publishers offer
(transient local included, so a latched instruction published before or while recording
is in the bag), and re-subscribed when publishers come or go with other QoS.
The bag timestamp is the middleware's receive time, as rosbag2 records it.

The inference node's parameters are fetched once (``<ns>/vla_inference``, if it runs) and
stored in the bag's ``custom_data`` so ``vla-ros bag regress`` can rebuild the exact
configuration that produced the recorded commands.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from vla_ros.bags.qos import (
    offered_qos,
    presumed_offer,
    probe_qos,
    subscription_qos,
)
from vla_ros.bags.typestore import TypeRegistry, UnknownTypeError, rclpy_message_class
from vla_ros.bags.writer import BagWriter

# What a VLA session is made of (relative to the robot's namespace).
DEFAULT_TOPICS = ('instruction', 'cmd/ee_twist', 'cmd/joint', 'cmd/gripper', 'cmd_vel',
                  'cmd/terminate', 'vla/action_chunk', 'vla/status', 'joint_states',
                  'ee_pose', 'vla_driver/applied_twist', 'vla_driver/applied_joints')
DEFAULT_PATTERNS = (r'camera/[^/]+/image_raw(/compressed)?',)
# Types known in advance: these topics are subscribed before anything in the graph names
# them, so a latched instruction published while recording is received even when its
# publisher exits before the next discovery poll.
DEFAULT_TYPES = {'instruction': 'std_msgs/msg/String'}
PARAMETERS_KEY = 'vla_ros/inference_parameters'


def _absolute(name: str, namespace: str) -> str:
    if name.startswith('/'):
        return name
    ns = namespace.strip('/')
    return f'/{ns}/{name}' if ns else f'/{name}'


@dataclass
class TopicSelection:
    """Which topics to record: explicit names, regular expressions, or everything."""

    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    all_topics: bool = False
    exclude: tuple[str, ...] = ()
    namespace: str = ''
    types: dict[str, str] = field(default_factory=dict)  # name -> type, known in advance

    @classmethod
    def vla_default(cls, namespace: str = '') -> TopicSelection:
        """Cameras, instruction, commands, chunks, status, joint states."""
        return cls(DEFAULT_TOPICS, DEFAULT_PATTERNS, namespace=namespace,
                   types=dict(DEFAULT_TYPES))

    def __post_init__(self):
        ns = self.namespace.strip('/')
        prefix = re.escape(f'/{ns}') if ns else ''
        self._names = {_absolute(n, self.namespace) for n in self.names}
        self._patterns = [re.compile(p if p.startswith('/') else f'{prefix}/{p}')
                          for p in self.patterns]
        self._exclude = [re.compile(p) for p in self.exclude]
        self.known_types = {_absolute(n, self.namespace): t for n, t in self.types.items()
                            if self.wants(_absolute(n, self.namespace))}

    def wants(self, topic: str) -> bool:
        """Whether ``topic`` (absolute) is selected."""
        if any(p.fullmatch(topic) for p in self._exclude):
            return False
        if self.all_topics:
            return topic not in ('/rosout', '/parameter_events')
        return topic in self._names or any(p.fullmatch(topic) for p in self._patterns)


class _RecentKeys:
    """The last ``size`` keys added (a bounded set)."""

    def __init__(self, size: int = 1024):
        self._order: deque = deque()
        self._keys: set = set()
        self._size = size

    def add(self, key) -> bool:
        """Add ``key``; False if it was already there."""
        if key in self._keys:
            return False
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self._size:
            self._keys.discard(self._order.popleft())
        return True


@dataclass
class _TopicState:
    """A recorded topic: bag index, type, its current subscriptions and their QoS."""

    index: int
    msgtype: str
    cls: type
    subscriptions: list = field(default_factory=list)
    profiles: tuple = ()
    seen: _RecentKeys = field(default_factory=_RecentKeys)
    in_bag: bool = False  # announced to the writer (with the offered QoS)


def _qos_key(profiles) -> tuple:
    return tuple((p.reliability, p.durability) for p in profiles)


def _describe(profiles) -> str:
    return ' + '.join(f'{p.reliability.name.lower()}/{p.durability.name.lower()}'
                      for p in profiles)


@dataclass
class RecordSummary:
    """What a recording wrote."""

    path: str
    counts: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    max_queue: int = 0
    skipped_topics: dict[str, str] = field(default_factory=dict)
    parameters_recorded: bool = False


class Recorder:
    """An rclpy node that records selected topics into a bag until stopped."""

    def __init__(self, context, output: str | Path, selection: TopicSelection,
                 storage: str = 'sqlite3', version: int = 9, max_file_bytes: int = 0,
                 max_file_duration: float = 0.0, flush_interval: float = 0.5,
                 queue_depth: int = 1000, parameters_node: str | None = 'vla_inference',
                 registry: TypeRegistry | None = None, log=None, compress: bool = False,
                 discovery_interval: float = 0.1):
        """Create the bag now (so a bad path fails before anything is subscribed)."""
        import rclpy

        if flush_interval <= 0:
            raise ValueError(f'flush_interval must be > 0, got {flush_interval}')
        self.selection = selection
        self.writer = BagWriter(output, storage, version, registry or TypeRegistry(),
                                max_file_bytes, max_file_duration, compress=compress)
        self.flush_interval = flush_interval
        self.queue_depth = queue_depth
        self.log = log or (lambda text: None)
        self.node = rclpy.create_node('vla_bag_recorder', context=context)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._topics: dict[str, _TopicState] = {}
        self.summary = RecordSummary(str(output))
        self._counts: list[int] = []
        self._names: list[str] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_loop, name='bag-writer',
                                        daemon=True)
        self._thread.start()
        self._parameters_node = parameters_node
        self._param_future = None
        self._param_client = None
        self.node.create_timer(discovery_interval, self._discover)
        if parameters_node:
            self.node.create_timer(0.25, self._fetch_parameters)
        self._discover()

    # -------------------------------------------------------------- discovery
    def _discover(self) -> None:
        """Subscribe to new topics, re-subscribe where the publishers changed.

        As ``ros2 bag record``: a topic's subscription takes the QoS its publishers
        offer, and is re-created when the publishers present need another reliability
        or durability (a latched publisher appearing next to best-effort ones, or a
        best-effort one that a reliable subscription would not match). A selected topic
        whose type is known but that has no publisher yet gets a pair of probes, best
        effort + volatile (matches any publisher) and reliable + transient local (gets a
        latched publisher's history): the middleware matches a publisher as soon as it
        appears, before the next poll, so even a latched instruction from a publisher
        that lives a moment is recorded. Polled every ``discovery_interval`` (rosbag2
        polls every 100 ms).
        """
        graph = dict(self.node.get_topic_names_and_types())
        for topic in list(graph) + [t for t in self.selection.known_types if t not in graph]:
            if topic in self.summary.skipped_topics or not self.selection.wants(topic):
                continue
            state = self._topics.get(topic)
            types = graph.get(topic) or [self.selection.known_types[topic]]
            msgtype = state.msgtype if state is not None else types[0]
            offered = self._offered(topic, msgtype) if topic in graph else []
            if offered:
                profiles = (subscription_qos(offered, self.queue_depth),)
            elif state is None or not state.subscriptions:
                profiles = probe_qos(self.queue_depth)
            else:
                continue  # publishers gone: keep the subscription for their return
            if state is None:
                state = self._register(topic, types)
                if state is None:
                    continue
            if offered and not state.in_bag:
                self._announce(state, offered)
            if _qos_key(profiles) == _qos_key(state.profiles):
                continue
            if state.profiles:
                self.log(f'{topic}: publishers changed, re-subscribing '
                         f'{_describe(state.profiles)} -> {_describe(profiles)}')
            self._subscribe(state, profiles)

    def subscribed_topics(self) -> set[str]:
        """Topics with a live subscription that matches their publishers' QoS (no probes)."""
        return {t for t, s in self._topics.items() if s.subscriptions and s.in_bag}

    def _offered(self, topic: str, msgtype: str) -> list:
        return [offered_qos(i.qos_profile) for i in self.node.get_publishers_info_by_topic(topic)
                if i.topic_type == msgtype]

    def _register(self, topic: str, types: list[str]) -> _TopicState | None:
        msgtype = types[0]
        if len(types) > 1:
            self.log(f'{topic} has several types {types}; recording {msgtype}')
        try:
            cls = rclpy_message_class(msgtype)
        except UnknownTypeError as exc:
            self.summary.skipped_topics[topic] = str(exc)
            self.log(f'not recording {topic}: {exc}')
            return None
        state = _TopicState(len(self._names), msgtype, cls)
        self._names.append(topic)
        self._counts.append(0)
        self._topics[topic] = state
        self.log(f'recording {topic} [{msgtype}]')
        return state

    def _announce(self, state: _TopicState, offered: list) -> None:
        """Add the topic to the bag; through the queue, so before any of its messages."""
        self._queue.put(('topic', state.index, self._names[state.index], state.msgtype,
                         offered))
        state.in_bag = True

    def _subscribe(self, state: _TopicState, profiles: tuple) -> None:
        """(Re-)subscribe; the new subscriptions exist before the old ones go.

        A transient-local subscription receives the publishers' history again, and two
        subscriptions (overlap, or the probe pair) may deliver the same sample: samples
        already seen (same source time stamp, sequence number and size) are dropped.
        """
        put = self._queue.put
        index, seen, topic = state.index, state.seen, self._names[state.index]

        def receiver(profile):
            def on_message(data, info):
                key = (info.get('source_timestamp'), info.get('publication_sequence_number'),
                       len(data))
                if key[0] and not seen.add(key):
                    return  # delivered twice (overlap, probe pair, latched history)
                if not state.in_bag:
                    # Matched before a discovery poll saw the publisher: it offers at
                    # least what this subscription asked for.
                    self._announce(state, self._offered(topic, state.msgtype)
                                   or [presumed_offer(profile)])
                stamp = info.get('received_timestamp') or time.time_ns()
                put((index, stamp, data))
            return on_message

        new = [self.node.create_subscription(state.cls, topic, receiver(profile), profile,
                                             raw=True) for profile in profiles]
        for old in state.subscriptions:
            self._drain_and_destroy(old)
        state.subscriptions, state.profiles = new, profiles

    def _drain_and_destroy(self, subscription) -> None:
        """Destroy a subscription after handing on what it received and nobody took yet.

        The middleware acknowledges a sample when it reaches the subscription, not when
        the executor calls back: a publisher (a latched instruction from ``vla-ros
        instruct``) may have exited content while its only sample still waits here, so
        destroying the subscription untaken would lose it.
        """
        try:
            with subscription.handle:
                while (taken := subscription.handle.take_message(
                        subscription.msg_type, subscription.raw)) is not None:
                    subscription.callback(*taken)
        except Exception as exc:  # noqa: BLE001 - an invalid handle has nothing to give
            self.log(f'{subscription.topic_name}: pending samples not taken: {exc}')
        self.node.destroy_subscription(subscription)

    def _fetch_parameters(self) -> None:
        """Store the inference node's parameters once (regression rebuilds its config).

        Two asynchronous service calls, advanced by this timer: list, then get.
        """
        if self.summary.parameters_recorded:
            return
        from rcl_interfaces.srv import GetParameters, ListParameters

        if self._param_client is None:
            name = _absolute(self._parameters_node, self.selection.namespace)
            self._param_client = (
                self.node.create_client(ListParameters, f'{name}/list_parameters'),
                self.node.create_client(GetParameters, f'{name}/get_parameters'))
        lister, getter = self._param_client
        step = self._param_future
        if step is None:
            if lister.service_is_ready() and getter.service_is_ready():
                self._param_future = ('list', lister.call_async(ListParameters.Request()))
        elif step[1].done():
            result = step[1].result()
            if step[0] == 'list':
                self._param_names = list(result.result.names)
                self._param_future = ('get', getter.call_async(
                    GetParameters.Request(names=self._param_names)))
            else:
                self._store_parameters(result)

    def _store_parameters(self, response) -> None:
        from rclpy.parameter import parameter_value_to_python

        values = {}
        for name, value in zip(self._param_names, response.values, strict=False):
            try:
                values[name] = parameter_value_to_python(value)
            except Exception:  # noqa: BLE001 - an unset/odd parameter is not worth failing
                continue
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        self._queue.put(('custom', PARAMETERS_KEY, json.dumps(values, sort_keys=True,
                                                              default=str)))
        self.summary.parameters_recorded = True

    # ---------------------------------------------------------------- writing
    def _write_loop(self) -> None:
        keys: dict[int, int] = {}
        last_flush = time.monotonic()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    item = None
                if item is not None:
                    if item[0] == 'topic':
                        _, index, topic, msgtype, offered = item
                        keys[index] = self.writer.add_topic(topic, msgtype, offered)
                    elif item[0] == 'custom':
                        self.writer.set_custom_data(item[1], item[2])
                    else:
                        index, stamp, data = item
                        self.writer.write(keys[index], stamp, data)
                        self._counts[index] += 1
                    self.summary.max_queue = max(self.summary.max_queue, self._queue.qsize())
                if time.monotonic() - last_flush >= self.flush_interval:
                    self.writer.flush()
                    last_flush = time.monotonic()
                if item is None and self._stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._error = exc
        finally:
            try:
                self.writer.close()
            except Exception as exc:  # noqa: BLE001
                self._error = self._error or exc

    def stop(self) -> RecordSummary:
        """Stop receiving, write what is queued, close the bag; raise a writer error."""
        for state in self._topics.values():
            for subscription in state.subscriptions:
                self._drain_and_destroy(subscription)  # Ctrl-C keeps what had arrived
            state.subscriptions = []
        self._stop.set()
        self._thread.join()
        self.node.destroy_node()
        self.summary.counts = {n: c for n, c in zip(self._names, self._counts, strict=True)
                               if self._topics[n].in_bag}
        meta = self.writer.metadata()
        self.summary.duration_s = meta.duration_ns * 1e-9
        if self._error is not None:
            raise RuntimeError(f'recording failed: {self._error}') from self._error
        return self.summary


def record(output: str | Path, selection: TopicSelection, duration: float | None = None,
           stop_event: threading.Event | None = None, domain_id: int | None = None,
           log=None, **options) -> RecordSummary:
    """Record until ``duration`` seconds passed or ``stop_event`` is set (Ctrl-C)."""
    import os

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop_event = stop_event or threading.Event()
    context = rclpy.Context()
    if domain_id is None:
        domain_id = int(os.environ.get('ROS_DOMAIN_ID', '0'))
    rclpy.init(args=[], context=context, domain_id=domain_id,
               signal_handler_options=SignalHandlerOptions.NO)
    recorder = None
    try:
        recorder = Recorder(context, output, selection, log=log, **options)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(recorder.node)
        end = None if duration is None else time.monotonic() + duration
        while not stop_event.is_set() and (end is None or time.monotonic() < end):
            executor.spin_once(timeout_sec=0.05)
        executor.remove_node(recorder.node)
        return recorder.stop()
    finally:
        if recorder is not None and recorder._thread.is_alive():
            recorder._stop.set()
            recorder._thread.join()
        rclpy.try_shutdown(context=context)
