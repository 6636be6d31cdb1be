"""Write rosbag2 bags: sqlite3 or mcap storage, split files, crash-safe periodic flushes.

Why not ``rosbags.rosbag2.Writer`` as is: it writes one file, commits sqlite only when it
closes and writes metadata.yaml only at the end, so a killed recording leaves nothing
readable. :class:`BagWriter` keeps rosbags' storage formats (its MCAP writer, the rosbag2
sqlite schema) and adds what a recorder needs:

- ``flush()`` (the recorder calls it every ``flush_interval``): commits the sqlite
  transaction (WAL journal, so a commit is an append) or closes the pending MCAP chunk and
  flushes it to the OS, then rewrites metadata.yaml atomically. **Guarantee**: after a
  SIGKILL every message written before the last flush is on disk and the bag opens with
  :class:`vla_ros.bags.reader.BagReader` (which replays a leftover sqlite WAL and scans a
  footer-less MCAP file); ``vla-ros bag reindex`` makes it a complete standard bag again.
  Process kills are covered; for power loss sqlite's ``synchronous=NORMAL`` keeps the
  database consistent but may drop the last commits.
- split files ``<bag>_<i>.db3|.mcap`` by size or duration, as ``ros2 bag record -b/-d``.
- metadata versions 5 (Humble), 8 (Iron/Jazzy) and 9 (Kilted) with matching sqlite schemas.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinition,
    MessageDefinitionFormat,
    Qos,
)
from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9
from rosbags.rosbag2.storage_mcap import McapWriter

from vla_ros.bags.metadata import (
    DISTRO_OF_VERSION,
    LATEST_VERSION,
    WRITABLE_VERSIONS,
    BagMetadata,
    FileInfo,
    TopicInfo,
    dump_inner_metadata,
    write_metadata,
)
from vla_ros.bags.typestore import TypeRegistry

STORAGES = ('sqlite3', 'mcap')
SUFFIX = {'sqlite3': '.db3', 'mcap': '.mcap'}


class BagWriteError(RuntimeError):
    """The bag cannot be created or written."""


@dataclass
class _Topic:
    key: int
    info: TopicInfo
    definition: str
    qos_text: str


# The rosbag2 sqlite3 schema: version 4 (Iron and later, with type hashes and message
# definitions) or version 3 (Humble).
_SQLITE_TABLES = {
    4: """
CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL,
                      metadata TEXT NOT NULL);
CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                    serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL,
                    type_description_hash TEXT NOT NULL);
CREATE TABLE message_definitions(id INTEGER PRIMARY KEY, topic_type TEXT NOT NULL,
                                 encoding TEXT NOT NULL,
                                 encoded_message_definition TEXT NOT NULL,
                                 type_description_hash TEXT NOT NULL);
CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL,
                      timestamp INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX timestamp_idx ON messages (timestamp ASC);
""",
    3: """
CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL,
                      metadata TEXT NOT NULL);
CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                    serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL,
                      timestamp INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX timestamp_idx ON messages (timestamp ASC);
""",
}


class _SqliteFile:
    """One .db3 file, written in WAL mode with explicit transactions."""

    def __init__(self, path: Path, version: int, distro: str, compress: bool = False):
        if compress:
            raise BagWriteError('sqlite3 storage has no compression here; use mcap')
        self.path = path
        self.schema = 4 if version >= 7 else 3
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute('PRAGMA journal_mode=WAL')
        self.conn.execute('PRAGMA synchronous=NORMAL')
        self.conn.executescript(_SQLITE_TABLES[self.schema])
        self.conn.execute('INSERT INTO schema VALUES (?, ?)', (self.schema, distro))
        self.conn.execute('BEGIN')
        self._types: set[str] = set()

    def add_topic(self, topic: _Topic) -> None:
        info = topic.info
        if self.schema >= 4:
            if info.msgtype not in self._types:
                self.conn.execute(
                    'INSERT INTO message_definitions (topic_type, encoding, '
                    'encoded_message_definition, type_description_hash) VALUES (?, ?, ?, ?)',
                    (info.msgtype, 'ros2msg', topic.definition, info.type_hash))
            self.conn.execute('INSERT INTO topics VALUES (?, ?, ?, ?, ?, ?)',
                              (topic.key, info.name, info.msgtype, info.serialization_format,
                               topic.qos_text, info.type_hash))
        else:
            self.conn.execute('INSERT INTO topics VALUES (?, ?, ?, ?, ?)',
                              (topic.key, info.name, info.msgtype, info.serialization_format,
                               topic.qos_text))
        self._types.add(info.msgtype)

    def write(self, topic: _Topic, timestamp: int, data) -> None:
        self.conn.execute('INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)',
                          (topic.key, timestamp, bytes(data)))

    def flush(self, version: int, metadata: str) -> None:
        self.conn.execute('INSERT OR REPLACE INTO metadata VALUES (1, ?, ?)',
                          (version, metadata))
        self.conn.execute('COMMIT')
        self.conn.execute('BEGIN')

    def close(self, version: int, metadata: str) -> None:
        self.flush(version, metadata)
        self.conn.execute('COMMIT')
        # Fold the WAL back so the finished bag is the single .db3 file rosbag2 expects.
        self.conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')
        self.conn.execute('PRAGMA journal_mode=DELETE')
        self.conn.close()


class _McapFile:
    """One .mcap file through rosbags' MCAP writer (ros2 profile, indexed, summary)."""

    def __init__(self, path: Path, version: int, distro: str, compress: bool = False):
        # McapWriter names its file after the directory it is given; a split bag needs
        # <bag>_<i>.mcap, so create it in a scratch directory and move the open file.
        scratch = path.parent / f'.{path.stem}.tmp'
        scratch.mkdir()
        self.writer = McapWriter(scratch, _compression_mode(compress))
        os.replace(self.writer.path, path)
        scratch.rmdir()
        self.writer.path = path
        self.path = path
        self._types: set[str] = set()
        self._connections: dict[int, Connection] = {}

    def add_topic(self, topic: _Topic) -> None:
        info = topic.info
        conn = Connection(
            id=topic.key, topic=info.name, msgtype=info.msgtype,
            msgdef=MessageDefinition(MessageDefinitionFormat.MSG, topic.definition),
            digest=info.type_hash, msgcount=0,
            ext=ConnectionExtRosbag2(serialization_format=info.serialization_format,
                                     offered_qos_profiles=list(info.offered_qos)),
            owner=None)
        if info.msgtype not in self._types:
            self.writer.add_msgtype(conn)
            self._types.add(info.msgtype)
        self.writer.add_connection(conn, topic.qos_text)
        self._connections[topic.key] = conn

    def write(self, topic: _Topic, timestamp: int, data) -> None:
        self.writer.write(self._connections[topic.key], timestamp, data)

    def flush(self, version: int, metadata: str) -> None:
        if self.writer.chunk.msgs:  # only chunks with messages; schema records wait
            self.writer.close_chunk()
        self.writer.bio.flush()

    def close(self, version: int, metadata: str) -> None:
        self.writer.close(version, metadata)


def _compression_mode(compress: bool):
    from rosbags.rosbag2.enums import CompressionMode

    # STORAGE = zstd-compressed MCAP chunks (rosbag2's mcap "zstd" presets do the same).
    return CompressionMode.STORAGE if compress else CompressionMode.NONE


@dataclass
class _FileState:
    info: FileInfo
    storage: object
    bytes_written: int = 0
    first_ns: int | None = None
    last_ns: int = 0
    topics: set = field(default_factory=set)


class BagWriter:
    """Create a rosbag2 bag directory and write CDR messages into it."""

    def __init__(self, path: str | Path, storage: str = 'sqlite3',
                 version: int = LATEST_VERSION, registry: TypeRegistry | None = None,
                 max_file_bytes: int = 0, max_file_duration: float = 0.0,
                 custom_data: dict[str, str] | None = None, compress: bool = False):
        """Create ``path`` (it must not exist); split when a file passes either limit.

        ``compress``: zstd-compressed MCAP chunks (mcap storage only).
        """
        if storage not in STORAGES:
            raise BagWriteError(f'storage must be one of {STORAGES}, got {storage!r}')
        if version not in WRITABLE_VERSIONS:
            raise BagWriteError(f'metadata version must be one of {WRITABLE_VERSIONS}, '
                                f'got {version}')
        if max_file_bytes < 0 or max_file_duration < 0:
            raise BagWriteError('split limits must be >= 0 (0 = no limit)')
        self.path = Path(path)
        if self.path.exists():
            raise BagWriteError(f'{self.path} exists already; not overwriting a bag')
        self.path.mkdir(parents=True)
        self.storage_id = storage
        self.version = version
        self.distro = DISTRO_OF_VERSION[version]
        self.registry = registry or TypeRegistry()
        self.max_file_bytes = int(max_file_bytes)
        self.max_file_duration_ns = int(max_file_duration * 1e9)
        self.custom_data = dict(custom_data or {})
        if compress and storage != 'mcap':
            raise BagWriteError('compression is available for mcap storage only')
        self.compress = compress
        self._topics: list[_Topic] = []
        self._files: list[_FileState] = []
        self._closed = False
        self._open_file()

    # --------------------------------------------------------------- topics
    def add_topic(self, name: str, msgtype: str, offered_qos: list[Qos] | tuple = (),
                  serialization_format: str = 'cdr') -> int:
        """Register a topic; returns the key for :meth:`write`.

        The definition and type hash come from the registry; an unknown type is still
        recorded (raw CDR) with an empty definition, as rosbag2 does.
        """
        for topic in self._topics:
            if topic.info.name == name and topic.info.msgtype == msgtype:
                return topic.key
        definition, type_hash = self.registry.definition(msgtype)
        profiles = list(offered_qos)
        qos_text = dump_qos_v8(profiles) if self.version < 9 else _yaml(dump_qos_v9(profiles))
        topic = _Topic(len(self._topics) + 1,
                       TopicInfo(name, msgtype, 0, serialization_format, profiles, type_hash),
                       definition, qos_text)
        self._topics.append(topic)
        self._current.storage.add_topic(topic)
        self._current.topics.add(topic.key)
        return topic.key

    def set_custom_data(self, key: str, value: str) -> None:
        """Store a string in metadata ``custom_data`` (written from version 6 on)."""
        self.custom_data[str(key)] = str(value)

    # -------------------------------------------------------------- writing
    @property
    def _current(self) -> _FileState:
        return self._files[-1]

    def write(self, key: int, timestamp_ns: int, data) -> None:
        """Append one serialized message (``data``: bytes-like CDR)."""
        if self._closed:
            raise BagWriteError('bag is closed')
        topic = self._topics[key - 1]
        state = self._current
        if self._should_split(state, timestamp_ns):
            self._split()
            state = self._current
        if topic.key not in state.topics:
            state.storage.add_topic(topic)
            state.topics.add(topic.key)
        state.storage.write(topic, int(timestamp_ns), data)
        state.bytes_written += len(data)
        state.info.message_count += 1
        if state.first_ns is None or timestamp_ns < state.first_ns:
            state.first_ns = int(timestamp_ns)
        state.last_ns = max(state.last_ns, int(timestamp_ns))
        topic.info.message_count += 1

    def _should_split(self, state: _FileState, timestamp_ns: int) -> bool:
        if state.info.message_count == 0:
            return False
        if self.max_file_bytes and state.bytes_written >= self.max_file_bytes:
            return True
        return bool(self.max_file_duration_ns and state.first_ns is not None
                    and timestamp_ns - state.first_ns >= self.max_file_duration_ns)

    def _split(self) -> None:
        old = self._current
        self._update_file_info(old)
        old.storage.close(self.version, self._inner_metadata_text())
        self._open_file()

    def _open_file(self) -> None:
        name = f'{self.path.name}_{len(self._files)}{SUFFIX[self.storage_id]}'
        cls = _SqliteFile if self.storage_id == 'sqlite3' else _McapFile
        try:
            storage = cls(self.path / name, self.version, self.distro, self.compress)
        except (OSError, sqlite3.Error) as exc:
            raise BagWriteError(f'cannot create {self.path / name}: {exc}') from exc
        self._files.append(_FileState(FileInfo(name), storage))
        for topic in self._topics:
            storage.add_topic(topic)
            self._current.topics.add(topic.key)

    # ------------------------------------------------------------- metadata
    @staticmethod
    def _update_file_info(state: _FileState) -> None:
        if state.first_ns is not None:
            state.info.start_ns = state.first_ns
            state.info.duration_ns = state.last_ns - state.first_ns

    def metadata(self) -> BagMetadata:
        """The bag's metadata as of now."""
        for state in self._files:
            self._update_file_info(state)
        stamped = [s for s in self._files if s.first_ns is not None]
        start = min((s.first_ns for s in stamped), default=0)
        end = max((s.last_ns for s in stamped), default=0)
        return BagMetadata(
            version=self.version, storage=self.storage_id,
            files=[s.info for s in self._files], topics=[t.info for t in self._topics],
            start_ns=start, duration_ns=max(0, end - start),
            message_count=sum(s.info.message_count for s in self._files),
            custom_data=dict(self.custom_data), ros_distro=self.distro)

    def _inner_metadata_text(self) -> str:
        # Storage files keep a copy (rosbag2 reads it when metadata.yaml is lost).
        return dump_inner_metadata(self.metadata())

    def flush(self) -> None:
        """Make everything written so far durable and readable; rewrite metadata.yaml."""
        if self._closed:
            return
        self._current.storage.flush(self.version, self._inner_metadata_text())
        write_metadata(self.path, self.metadata())

    def close(self) -> BagMetadata:
        """Finish the current file and write the final metadata.yaml."""
        if self._closed:
            return self.metadata()
        self._current.storage.close(self.version, self._inner_metadata_text())
        self._closed = True
        meta = self.metadata()
        write_metadata(self.path, meta)
        return meta

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _yaml(value) -> str:
    import io

    from ruamel.yaml import YAML

    if not value:
        return ''
    out = io.StringIO()
    yaml = YAML(typ='safe')
    yaml.default_flow_style = False
    yaml.dump(value, out)
    return out.getvalue().strip()
