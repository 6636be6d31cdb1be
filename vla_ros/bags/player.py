"""Republish a bag with its original timing (``vla-ros bag replay``).

Messages are published as the recorded CDR bytes (no re-serialization). A reader thread
reads ahead into a bounded queue and checks each payload by decoding it, so a corrupt
message is reported and skipped instead of reaching subscribers; the publishing loop only
sleeps until each message's time and publishes. Message ``i`` goes out at
``t0 + (stamp_i - first_stamp) / rate``: the schedule is absolute, so sleep jitter does not
accumulate. Topics whose type is not installed are reported and the rest is replayed.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from vla_ros.bags.qos import replay_qos
from vla_ros.bags.reader import BagReader
from vla_ros.bags.typestore import UnknownTypeError, rclpy_message_class

_END = object()
_MAX_LISTED = 20  # problems listed one by one; further ones are counted


@dataclass
class PlayOptions:
    """How to replay: speed, selection, remapping, loop, offset, QoS."""

    rate: float = 1.0
    topics: tuple[str, ...] | None = None
    remap: dict[str, str] = field(default_factory=dict)
    loop: bool = False
    start_offset: float = 0.0
    queue_depth: int = 1000
    reliable: bool = True
    validate: bool = True
    wait_for_subscribers: float = 0.0
    progress: bool = False
    max_loops: int | None = None
    ack_timeout: float = 5.0

    def __post_init__(self):
        if not 0.001 <= self.rate <= 1000:
            raise ValueError(f'rate must be in [0.001, 1000], got {self.rate}')
        if self.queue_depth < 0:
            raise ValueError(f'queue depth must be >= 0 (0 = keep all), got {self.queue_depth}')
        if self.start_offset < 0:
            raise ValueError(f'start offset must be >= 0, got {self.start_offset}')
        for src, dst in self.remap.items():
            if not src.startswith('/') or not dst.startswith('/'):
                raise ValueError(f'remap {src}:={dst}: use absolute topic names')


@dataclass
class PlaySummary:
    """What a replay did."""

    published: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    loops: int = 0
    wall_time_s: float = 0.0
    bag_time_s: float = 0.0
    late_mean_ms: float = 0.0
    late_max_ms: float = 0.0

    @property
    def total_published(self) -> int:
        """Messages published over all topics."""
        return sum(self.published.values())


class Player:
    """Publishes a bag's messages on an rclpy node."""

    SETTLE_S = 0.5

    def __init__(self, context, reader: BagReader, options: PlayOptions, log=None):
        """Create one publisher per replayable topic; report the others."""
        import rclpy

        self.reader = reader
        self.options = options
        self.log = log or (lambda text: None)
        self.node = rclpy.create_node('vla_bag_player', context=context)
        self.summary = PlaySummary(problems=list(reader.problems))
        self._reader_problems_seen = len(reader.problems)
        self._publishers: dict[str, object] = {}
        self._problem_count = 0
        selected = [t for t in reader.topics
                    if options.topics is None or t.name in options.topics]
        if options.topics is not None:
            missing = sorted(set(options.topics) - {t.name for t in reader.topics})
            for name in missing:
                self._problem(f'topic {name} is not in the bag')
        for topic in selected:
            try:
                cls = rclpy_message_class(topic.msgtype)
            except (UnknownTypeError, ValueError) as exc:
                self._problem(f'{topic.name}: {exc}; its {topic.message_count} messages '
                              f'are skipped')
                continue
            if options.validate and not reader.registry.resolve(topic.msgtype):
                self._problem(f'{topic.name}: no definition of {topic.msgtype} to check '
                              f'payloads against; publishing them unchecked')
            name = options.remap.get(topic.name, topic.name)
            self._publishers[topic.name] = self.node.create_publisher(
                cls, name, replay_qos(topic.offered_qos, options.queue_depth,
                                      options.reliable))
            self.summary.published[topic.name] = 0

    def _problem(self, text: str) -> None:
        self._problem_count += 1
        if self._problem_count <= _MAX_LISTED:
            self.summary.problems.append(text)
            self.log(text)
        elif self._problem_count == _MAX_LISTED + 1:
            self.summary.problems.append('(further problems are only counted)')

    def wait_for_subscribers(self, timeout: float, stop: threading.Event) -> bool:
        """Wait until every publisher has a subscriber (or ``timeout``); True if so."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not stop.is_set():
            if all(p.get_subscription_count() > 0 for p in self._publishers.values()):
                # The publisher counts a subscriber before that subscriber has matched
                # the publisher; a volatile subscriber drops what arrives in between for
                # good (measured: the first ~15 ms of a 10x replay). Let discovery settle.
                stop.wait(self.SETTLE_S)
                return True
            time.sleep(0.02)
        return all(p.get_subscription_count() > 0 for p in self._publishers.values())

    # ------------------------------------------------------------ read ahead
    def _read_ahead(self, out: queue.Queue, stop: threading.Event) -> None:
        start_ns = None
        if self.options.start_offset > 0:
            start_ns = self.reader.start_ns + int(self.options.start_offset * 1e9)
        checkable = {}
        try:
            for message in self.reader.messages(list(self._publishers), start_ns):
                if stop.is_set():
                    break
                if self.options.validate:
                    ok = checkable.get(message.msgtype)
                    if ok is None:
                        ok = checkable[message.msgtype] = \
                            self.reader.registry.resolve(message.msgtype)
                    if ok:
                        try:
                            self.reader.decode(message)
                        except ValueError as exc:
                            self.summary.skipped[message.topic] = \
                                self.summary.skipped.get(message.topic, 0) + 1
                            self._problem(f'{exc}; skipped')
                            continue
                while not stop.is_set():
                    try:
                        out.put(message, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except Exception as exc:  # noqa: BLE001 - report and end this pass
            self._problem(f'reading stopped: {type(exc).__name__}: {exc}')
        finally:
            # Wait for room rather than dropping the end marker (the publisher drains).
            while True:
                try:
                    out.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if stop.is_set():
                        break

    # ------------------------------------------------------------------ play
    def play(self, stop: threading.Event | None = None) -> PlaySummary:
        """Replay (looping if asked) until the end or ``stop``; returns the summary."""
        stop = stop or threading.Event()
        options = self.options
        if options.wait_for_subscribers > 0 and self._publishers:
            if not self.wait_for_subscribers(options.wait_for_subscribers, stop):
                idle = [n for n, p in self._publishers.items() if p.get_subscription_count() == 0]
                self.log(f'no subscriber yet on {idle}; replaying anyway')
        progress = None
        total = sum(t.message_count for t in self.reader.topics if t.name in self._publishers)
        if options.progress:
            from tqdm import tqdm

            progress = tqdm(total=total, unit='msg', desc='replay', dynamic_ncols=True,
                            mininterval=0.25)
        late_sum, late_n, late_max = 0.0, 0, 0.0
        started = time.monotonic()
        try:
            while not stop.is_set():
                pending: queue.Queue = queue.Queue(maxsize=512)
                reader = threading.Thread(target=self._read_ahead, args=(pending, stop),
                                          name='bag-read-ahead', daemon=True)
                reader.start()
                t0 = first = None
                while not stop.is_set():
                    message = pending.get()
                    if message is _END:
                        break
                    if first is None:
                        first, t0 = message.timestamp, time.monotonic()
                        self.summary.bag_time_s = 0.0
                    due = t0 + (message.timestamp - first) * 1e-9 / options.rate
                    wait = due - time.monotonic()
                    if wait > 0:
                        stop.wait(wait)
                        if stop.is_set():
                            break
                    else:
                        late_max = max(late_max, -wait)
                    late_sum += max(0.0, time.monotonic() - due)
                    late_n += 1
                    self._publishers[message.topic].publish(message.data)
                    self.summary.published[message.topic] += 1
                    self.summary.bag_time_s = max(self.summary.bag_time_s,
                                                  (message.timestamp - first) * 1e-9)
                    if progress is not None:
                        progress.update(1)
                reader.join()
                for text in self.reader.problems[self._reader_problems_seen:]:
                    self._problem(text)
                self._reader_problems_seen = len(self.reader.problems)
                self.summary.loops += 1
                if not options.loop or (options.max_loops and
                                        self.summary.loops >= options.max_loops):
                    break
                if progress is not None:
                    progress.reset(total=total)
        finally:
            if progress is not None:
                progress.close()
        self.summary.wall_time_s = time.monotonic() - started
        self._wait_for_acks(options.ack_timeout)
        self.summary.late_mean_ms = 1e3 * late_sum / late_n if late_n else 0.0
        self.summary.late_max_ms = 1e3 * late_max
        if self._problem_count > _MAX_LISTED:
            self.summary.problems.append(f'{self._problem_count} problems in total')
        return self.summary

    def _wait_for_acks(self, timeout: float) -> None:
        """Let reliable subscribers catch up before the publishers go away.

        A reliable writer repairs lost samples only while it exists (on the reader's
        negative acknowledgement, after a heartbeat); a player that exits right after its
        last publish loses whatever was still being repaired, at high rates whole topics.
        """
        from rclpy.duration import Duration

        end = time.monotonic() + timeout
        for name, publisher in self._publishers.items():
            left = max(0.0, end - time.monotonic())
            if not publisher.wait_for_all_acked(Duration(seconds=left)):
                self._problem(f'{name}: not every subscriber acknowledged every message '
                              f'within {timeout:.1f} s')

    def close(self) -> None:
        """Destroy the node."""
        self.node.destroy_node()


def replay(bag, options: PlayOptions, stop: threading.Event | None = None,
           domain_id: int | None = None, log=None) -> PlaySummary:
    """Open ``bag``, replay it on a fresh rclpy context and return the summary."""
    import os

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    if domain_id is None:
        domain_id = int(os.environ.get('ROS_DOMAIN_ID', '0'))
    rclpy.init(args=[], context=context, domain_id=domain_id,
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        with BagReader(bag) as reader:
            player = Player(context, reader, options, log=log)
            try:
                return player.play(stop)
            finally:
                player.close()
    finally:
        rclpy.try_shutdown(context=context)
