"""Record the soak into a real rosbag2 bag and compare what it holds with what was published.

:func:`bag_recorder` makes the ``recorder`` of :func:`vla_ros.reliability.soak.run_soak`:
it starts ``vla-ros bag record`` as a child process (the recorder a user runs), stops it
with SIGINT (a clean close), and reads the counts back from the bag with
:class:`~vla_ros.bags.reader.BagReader`, never from the recorder's own summary.

What "published" means here: the soak process subscribes to every recorded topic before
the nodes start (reliable topics with a deep reliable history), so for a reliable topic it
receives every message the publisher sent once discovery has matched it. The recorder is
matched at another moment (it discovers topics every 0.5 s), so the comparison window of
a topic starts at the later of the two first header stamps and ends when the node
processes have exited (they are stopped before the recorder). :func:`compare_counts`
counts, on both sides, the messages stamped strictly after the window start (an action
chunk's stamp is its camera frame's, which two chunks may share). Every topic compared has
a header whose stamp does not go backwards in publishing order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Relative to the soak namespace; the driver node is ``vla_driver``.
RELIABLE_TOPICS = ('cmd/ee_twist', 'vla/action_chunk', 'vla/status',
                   'vla_driver/applied_twist')
CAMERA_TOPICS = ('camera/front/image_raw', 'camera/wrist/image_raw')
RECORDER_NODE = 'vla_bag_recorder'


def header_stamp_ns(cdr: bytes) -> int:
    """The ``header.stamp`` (ns) of a CDR-serialized message whose first field is a Header.

    Layout: a 4-byte encapsulation header (its second byte's low bit says little endian),
    then ``int32 sec`` and ``uint32 nanosec``.
    """
    data = bytes(cdr[:12])
    if len(data) < 12:
        raise ValueError(f'{len(cdr)} bytes cannot hold a CDR header stamp')
    order = '<' if data[1] & 1 else '>'
    sec, nanosec = struct.unpack(f'{order}iI', data[4:12])
    return sec * 1_000_000_000 + nanosec


def compare_counts(published: list[int], recorded: list[int]) -> dict:
    """Compare the stamps a source saw with the stamps in the bag, over a common window.

    The window starts at the later of the first recorded and the first published stamp
    (each subscriber starts receiving once discovery matched it to the publisher) and
    takes the messages stamped strictly after it, up to the source's last stamp: a
    message sent as the publisher shuts down can reach the recorder and not the source,
    and nothing after the source's last message can be checked (a bag missing its tail
    still counts, since the source's last stamp is inside the window). Returns
    ``published`` and ``recorded`` in the window, ``missing`` (published minus recorded,
    negative if the bag holds more), the bag's ``recorded_total``, how many it holds after
    the window (``recorded_after_window``) and where the sides differ. With nothing
    recorded, ``published`` is everything the source saw.
    """
    if not recorded:
        return {'published': len(published), 'recorded': 0, 'missing': len(published),
                'recorded_total': 0, 'window_start_ns': None}
    # Both subscribers join late by a discovery delay, not always in the same order.
    start = max(min(recorded), min(published)) if published else min(recorded)
    end = max(published) if published else max(recorded)
    sent = [s for s in published if s > start]
    kept = [s for s in recorded if start < s <= end]
    # Where the two sides differ (seconds after the window start), to tell which one lost.
    only_sent = sorted(set(sent) - set(kept))
    only_kept = sorted(set(kept) - set(sent))
    return {'published': len(sent), 'recorded': len(kept), 'missing': len(sent) - len(kept),
            'recorded_total': len(recorded), 'window_start_ns': start,
            'recorded_after_window': sum(1 for s in recorded if s > end),
            'not_recorded_at_s': [round((s - start) * 1e-9, 3) for s in only_sent[:10]],
            'not_published_at_s': [round((s - start) * 1e-9, 3) for s in only_kept[:10]]}


def _absolute(topic: str, namespace: str) -> str:
    ns = namespace.strip('/')
    return f'/{ns}/{topic}' if ns else f'/{topic}'


class BagRecording:
    """A ``vla-ros bag record`` child process recording the soak's topics."""

    def __init__(self, output: Path, namespace: str, env: dict, topics: tuple[str, ...],
                 storage: str = 'sqlite3', flush_interval: float = 0.5, log_path=None):
        """Start recording ``topics`` (relative to ``namespace``) into ``output``."""
        if output.exists():
            raise ValueError(f'{output} exists already; not overwriting a bag')
        self.output = output
        self.namespace = namespace
        self.topics = tuple(topics)
        self.storage = storage
        self.flush_interval = flush_interval
        self.stamps: dict[str, list[int]] = {}
        self.summary: dict = {}
        self.problems: list[str] = []
        self._log = open(log_path or os.devnull, 'w')  # noqa: SIM115 - closed in stop()
        command = [sys.executable, '-m', 'vla_ros.bags.cli', 'record', *self.topics,
                   '-o', str(output), '--namespace', namespace, '-s', storage,
                   '--flush-interval', str(flush_interval), '--no-parameters']
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)

    def wait_subscribed(self, node, timeout: float = 30.0) -> None:
        """Block until the recorder subscribes to every topic (seen from ``node``)."""
        deadline = time.monotonic() + timeout
        pending = [_absolute(t, self.namespace) for t in self.topics]
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f'the bag recorder exited with {self.proc.returncode}')
            pending = [t for t in pending if not any(
                i.node_name == RECORDER_NODE for i in node.get_subscriptions_info_by_topic(t))]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f'the bag recorder did not subscribe to {pending}')
            time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> dict[str, int]:
        """SIGINT the recorder (it closes the bag), then count what the bag holds.

        Returns ``{topic (relative): messages in the bag}``; the header stamps are kept in
        :attr:`stamps` for :func:`compare_counts`.
        """
        from vla_ros.bags.reader import BagReader

        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        finally:
            self._log.close()
        self.returncode = self.proc.returncode
        try:
            self.summary = json.loads(out) if out.strip() else {}
        except json.JSONDecodeError:
            self.summary = {}
        prefix = _absolute('', self.namespace)
        with BagReader(self.output) as reader:
            self.problems = list(reader.problems)
            for message in reader.messages():
                self.stamps.setdefault(message.topic.removeprefix(prefix), []).append(
                    header_stamp_ns(message.data))
        return {t: len(s) for t, s in self.stamps.items()}

    def bytes_on_disk(self) -> int:
        """Size of the bag directory."""
        return sum(p.stat().st_size for p in self.output.rglob('*') if p.is_file())


def bag_recorder(output_dir=None, storage: str = 'sqlite3', flush_interval: float = 0.5,
                 cameras: tuple[str, ...] = CAMERA_TOPICS, keep: bool = True):
    """A ``recorder`` for :func:`~vla_ros.reliability.soak.run_soak`.

    Records :data:`RELIABLE_TOPICS` and ``cameras`` into ``<output_dir>/soak_bag`` (a new
    temporary directory when not given). ``keep=False`` deletes the bag once counted: a
    soak with two 224 px cameras at 30 Hz writes ~9 MB/s.
    """
    def start(namespace: str, env: dict) -> BagRecording:
        root = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix='vla_soak_'))
        root.mkdir(parents=True, exist_ok=True)
        recording = BagRecording(root / 'soak_bag', namespace, env,
                                 RELIABLE_TOPICS + tuple(cameras), storage, flush_interval,
                                 log_path=root / 'bag_record.log')
        if not keep:
            stop = recording.stop

            def stop_and_delete(timeout: float = 60.0):
                try:
                    return stop(timeout)
                finally:
                    recording.size_bytes = recording.bytes_on_disk()
                    shutil.rmtree(recording.output, ignore_errors=True)

            recording.stop = stop_and_delete
        return recording

    return start


def bag_report(recording: BagRecording, received: dict[str, list[int]]) -> dict:
    """Published vs recorded per reliable topic, received vs recorded per camera."""
    reliable = {t: compare_counts(received.get(t, []), recording.stamps.get(t, []))
                for t in recording.topics if t in RELIABLE_TOPICS}
    cameras = {}
    for topic in recording.topics:
        if topic in RELIABLE_TOPICS:
            continue
        c = compare_counts(received.get(topic, []), recording.stamps.get(topic, []))
        cameras[topic] = {'received': c['published'], 'recorded': c['recorded'],
                          'recorded_total': c['recorded_total']}
    size = getattr(recording, 'size_bytes', None)
    if size is None and recording.output.exists():
        size = recording.bytes_on_disk()
    return {
        'path': str(recording.output), 'storage': recording.storage,
        'flush_interval_s': recording.flush_interval,
        'recorder_exit_code': getattr(recording, 'returncode', None),
        'bag_problems': recording.problems, 'bytes': size,
        'recorded': {t: len(s) for t, s in recording.stamps.items()},
        'published_vs_recorded': reliable,
        'reliable_topics_match': bool(reliable) and all(
            c['missing'] == 0 and c['recorded'] > 0 for c in reliable.values()),
        'cameras_received_vs_recorded': cameras,
        'note': ('reliable topics: messages stamped after both the bag and a reliable '
                 'subscriber created before the nodes started had their first message, '
                 'up to that subscriber\'s last one, counted by it (published) and read '
                 'back from the bag '
                 '(recorded); both must be equal. '
                 'Cameras are best effort: the soak process and the recorder are two '
                 'independent subscribers, each may drop frames, so the counts are '
                 'reported, not required to match.'),
    }
