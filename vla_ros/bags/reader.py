"""Read any rosbag2 bag, and as much as possible of a damaged one.

:class:`BagReader` opens a bag directory (or a single ``.db3`` / ``.mcap`` file) written
by rosbag2 from Foxy to Kilted or by ``rosbags``: split bags, both storages, metadata
versions 1-9, zstd file or message compression. Damage is reported in
:attr:`BagReader.problems` and reading goes on with what is left:

- metadata.yaml missing or unreadable: the storage files in the directory are used;
- a storage file missing or unreadable: skipped, the other files are read;
- an sqlite file with a leftover WAL or rollback journal (recording killed): recovered in
  a temporary copy (the bag on disk is not modified; ``vla-ros bag reindex`` does that);
- an sqlite file with damaged pages: rows are salvaged block by block, bad ones skipped;
- an MCAP file without footer (truncated, killed): complete records are scanned.

Messages are yielded raw (CDR bytes) in timestamp order across files; decoding is the
caller's choice (:meth:`BagReader.decode`), so a corrupt payload is a per-message error.
"""

from __future__ import annotations

import heapq
import re
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.rosbag2.metadata import parse_qos

from vla_ros.bags.metadata import (
    BagMetadata,
    FileInfo,
    MetadataError,
    TopicInfo,
    read_metadata,
)
from vla_ros.bags.typestore import TypeRegistry, UnknownTypeError

STORAGE_OF_SUFFIX = {'.db3': 'sqlite3', '.mcap': 'mcap'}
_MCAP_MAGIC = b'\x89MCAP0\r\n'


class BagError(RuntimeError):
    """The path is not a bag, or nothing in it can be read."""


@dataclass(frozen=True)
class BagMessage:
    """One recorded message: topic, type, bag time (receive time, ns) and CDR bytes."""

    topic: str
    msgtype: str
    timestamp: int
    data: bytes


@dataclass
class _Conn:
    """A topic as one storage file declares it."""

    key: int
    topic: str
    msgtype: str
    definition: str = ''
    encoding: str = 'ros2msg'
    type_hash: str = ''
    offered_qos: list = field(default_factory=list)
    count: int = 0


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', path.name)]


# ----------------------------------------------------------------- storage files
class _StorageFile:
    """A readable storage file: connections and time-ordered (conn, ts, data) rows."""

    def __init__(self, path: Path, display: str, problems: list[str]):
        self.path = path
        self.display = display
        self.problems = problems
        self.connections: list[_Conn] = []
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.count = 0

    def rows(self, start_ns=None, stop_ns=None) -> Iterator[tuple[_Conn, int, bytes]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles."""


class _RosbagsFile(_StorageFile):
    """A healthy file read by rosbags; falls back to salvage when reading breaks."""

    def __init__(self, path, display, problems, storage: str, workdir: Path):
        super().__init__(path, display, problems)
        self.workdir = workdir
        from rosbags.rosbag2.storage_mcap import McapReader
        from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

        self.storage = storage
        self.reader = (Sqlite3Reader if storage == 'sqlite3' else McapReader)(path)
        self.reader.open()
        for c in self.reader.connections:
            self.connections.append(_Conn(
                c.id, c.topic, c.msgtype, c.msgdef.data,
                'ros2idl' if c.msgdef.format.name == 'IDL' else 'ros2msg', c.digest or '',
                list(c.ext.offered_qos_profiles), c.msgcount))
        meta = self.reader.metadata
        if meta.message_count:
            self.start_ns, self.end_ns = meta.start_time, meta.end_time - 1
        self.count = meta.message_count
        self._by_id = {c.key: c for c in self.connections}

    def rows(self, start_ns=None, stop_ns=None):
        last = None
        try:
            for conn, ts, data in self.reader.messages(self.reader.connections, start_ns,
                                                       stop_ns):
                last = ts
                yield self._by_id[conn.id], ts, data
        except Exception as exc:  # noqa: BLE001 - any storage error: salvage the rest
            self.problems.append(
                f'{self.display}: read error after t={_fmt_ns(last)}: '
                f'{type(exc).__name__}: {exc}; salvaging the rest of the file')
            salvaged = _salvage(self.path, self.storage, self.display, self.problems,
                                self.workdir)
            if salvaged is not None:
                after = last if last is not None else -1
                yield from salvaged.rows(max(after + 1, start_ns or 0), stop_ns)

    def close(self):
        self.reader.close()


class _SalvagedFile(_StorageFile):
    """Rows recovered from a damaged file, held in memory in timestamp order."""

    def __init__(self, path, display, problems, connections, rows):
        super().__init__(path, display, problems)
        self.connections = connections
        self._rows = sorted(rows, key=lambda r: r[1])
        for conn in connections:
            conn.count = sum(1 for r in self._rows if r[0] is conn)
        self.count = len(self._rows)
        if self._rows:
            self.start_ns, self.end_ns = self._rows[0][1], self._rows[-1][1]

    def rows(self, start_ns=None, stop_ns=None):
        for conn, ts, data in self._rows:
            if (start_ns is None or ts >= start_ns) and (stop_ns is None or ts < stop_ns):
                yield conn, ts, data


def _salvage(path: Path, storage: str, display: str, problems: list[str], workdir: Path):
    try:
        if storage == 'sqlite3':
            conns, rows, lost = _salvage_sqlite(_padded_copy(path, workdir))
        else:
            conns, rows, lost = _scan_mcap(path)
    except Exception as exc:  # noqa: BLE001 - nothing recoverable
        problems.append(f'{display}: unreadable ({type(exc).__name__}: {exc}); skipped')
        return None
    note = f'{display}: salvaged {len(rows)} messages'
    problems.append(note + (f'; {lost}' if lost else ''))
    return _SalvagedFile(path, display, problems, conns, rows)


def _padded_copy(path: Path, workdir: Path) -> Path:
    """Copy a .db3 and pad it to the page count its header states.

    SQLite refuses a file shorter than its header says (a truncated copy) before reading
    a single row; zero pages in place of the lost ones make only those rows unreadable.
    """
    header = path.read_bytes()[:100]
    if len(header) < 100 or not header.startswith(b'SQLite format 3\x00'):
        raise BagError('not an SQLite database (bad header)')
    (page_size,) = struct.unpack('>H', header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    (pages,) = struct.unpack('>I', header[28:32])
    out = workdir / f'salvage_{path.name}'
    shutil.copyfile(path, out)
    if out.stat().st_size < page_size * pages:
        with open(out, 'r+b') as f:
            f.truncate(page_size * pages)
    return out


def _salvage_sqlite(path: Path):
    """Read topics and messages row block by row block, skipping damaged rows."""
    db = sqlite3.connect(f'file:{path}?mode=ro&immutable=1', uri=True)
    try:
        columns = [r[1] for r in db.execute('PRAGMA table_info(topics)')]
        qos_col = 'offered_qos_profiles' if 'offered_qos_profiles' in columns else "''"
        hash_col = 'type_description_hash' if 'type_description_hash' in columns else "''"
        conns = {}
        for cid, name, typ, qos, digest in db.execute(
                f'SELECT id, name, type, {qos_col}, {hash_col} FROM topics'):
            try:
                profiles = parse_qos(qos)
            except Exception:  # noqa: BLE001
                profiles = []
            conns[cid] = _Conn(cid, name, typ, type_hash=digest or '', offered_qos=profiles)
        try:
            for typ, enc, text in db.execute(
                    'SELECT topic_type, encoding, encoded_message_definition '
                    'FROM message_definitions'):
                for c in conns.values():
                    if c.msgtype == typ:
                        c.definition, c.encoding = text, enc
        except sqlite3.Error:
            pass
        try:
            (max_id,) = db.execute('SELECT max(id) FROM messages').fetchone()
        except sqlite3.Error:
            max_id = None
        rows, bad, block = [], [], 256
        last_good, start, empty_blocks = 0, 1, 0
        # Without a readable max(id), walk until many blocks in a row come back empty.
        while (max_id is not None and start <= max_id) or (max_id is None and empty_blocks < 8):
            got = _sqlite_block(db, start, start + block, conns)
            if got is None:  # the block is damaged: try its rows one by one
                got = []
                for rid in range(start, start + block):
                    one = _sqlite_block(db, rid, rid + 1, conns)
                    if one is None:
                        bad.append(rid)
                    elif one:
                        got.extend(one)
                        last_good = rid
            elif got:
                last_good = start + block - 1
            empty_blocks = 0 if got else empty_blocks + 1
            rows.extend(got)
            start += block
        holes = sum(1 for rid in bad if rid < last_good)
        notes = [f'{holes} damaged rows skipped'] if holes else []
        if any(rid > last_good for rid in bad):
            notes.append(f'rows after id {last_good} unreadable (file truncated?)')
        lost = '; '.join(notes)
        return list(conns.values()), rows, lost
    finally:
        db.close()


def _sqlite_block(db, lo, hi, conns):
    try:
        out = []
        for tid, ts, data in db.execute(
                'SELECT topic_id, timestamp, data FROM messages WHERE id >= ? AND id < ? '
                'ORDER BY id', (lo, hi)):
            if tid in conns:
                out.append((conns[tid], int(ts), bytes(data)))
        return out
    except sqlite3.Error:
        return None


def _scan_mcap(path: Path):
    """Scan an MCAP file record by record up to the first incomplete one."""
    data = path.read_bytes()
    if not data.startswith(_MCAP_MAGIC):
        raise BagError(f'{path.name} is not an MCAP file (bad magic)')
    schemas: dict[int, tuple[str, str, str]] = {}
    conns: dict[int, _Conn] = {}
    rows = []
    offset, end = len(_MCAP_MAGIC), len(data)
    stop_reason = ''
    offset, stop_reason = _scan_records(data, offset, end, schemas, conns, rows, top=True)
    lost = ''
    if stop_reason:
        lost = f'{stop_reason} at byte {offset} of {end}; later data lost'
    return list(conns.values()), rows, lost


def _read_str(buf, pos):
    (n,) = struct.unpack_from('<I', buf, pos)
    pos += 4
    if pos + n > len(buf):
        raise ValueError('string runs past its record')
    return bytes(buf[pos:pos + n]).decode(), pos + n


def _scan_records(buf, offset, end, schemas, conns, rows, top):
    while offset < end:
        if offset + 9 > end:
            return offset, 'incomplete record header'
        op = buf[offset]
        (length,) = struct.unpack_from('<Q', buf, offset + 1)
        body_start, body_end = offset + 9, offset + 9 + length
        if body_end > end:
            return offset, f'truncated record (opcode 0x{op:02x})'
        body = memoryview(buf)[body_start:body_end]
        try:
            if op == 0x03:  # schema
                (sid,) = struct.unpack_from('<H', body, 0)
                name, pos = _read_str(body, 2)
                enc, pos = _read_str(body, pos)
                (n,) = struct.unpack_from('<I', body, pos)
                schemas[sid] = (name, enc, bytes(body[pos + 4:pos + 4 + n]).decode())
            elif op == 0x04:  # channel
                cid, sid = struct.unpack_from('<HH', body, 0)
                topic, pos = _read_str(body, 4)
                _, pos = _read_str(body, pos)
                meta = _read_map(body, pos)
                name, enc, text = schemas.get(sid, ('', 'ros2msg', ''))
                try:
                    profiles = parse_qos(meta.get('offered_qos_profiles', ''))
                except Exception:  # noqa: BLE001
                    profiles = []
                conns.setdefault(cid, _Conn(cid, topic, name, text, enc, '', profiles))
            elif op == 0x05:  # message
                cid, _, log_time = struct.unpack_from('<HIQ', body, 0)
                if cid in conns:
                    rows.append((conns[cid], log_time, bytes(body[22:])))
            elif op == 0x06 and top:  # chunk
                _, _, size, _ = struct.unpack_from('<QQQI', body, 0)
                compression, pos = _read_str(body, 28)
                (clen,) = struct.unpack_from('<Q', body, pos)
                payload = bytes(body[pos + 8:pos + 8 + clen])
                inner = _decompress(payload, compression, size)
                _, reason = _scan_records(inner, 0, len(inner), schemas, conns, rows, top=False)
                if reason:
                    return offset, f'damaged chunk ({reason})'
            elif op == 0x02:  # footer: done
                return end, ''
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            return offset, f'damaged record 0x{op:02x} ({exc})'
        offset = body_end
    return offset, ''


def _read_map(buf, pos) -> dict:
    (n,) = struct.unpack_from('<I', buf, pos)
    pos += 4
    end = pos + n
    out = {}
    while pos < end:
        key, pos = _read_str(buf, pos)
        value, pos = _read_str(buf, pos)
        out[key] = value
    return out


def _decompress(payload: bytes, compression: str, size: int) -> bytes:
    if compression == '':
        return payload
    if compression == 'zstd':
        from backports import zstd

        return zstd.decompress(payload)
    if compression == 'lz4':
        from lz4.frame import decompress

        return decompress(payload)
    raise ValueError(f'unsupported chunk compression {compression!r}')


def _fmt_ns(ns) -> str:
    return 'start' if ns is None else f'{ns * 1e-9:.3f}s'


# ------------------------------------------------------------------------ reader
class BagReader:
    """A rosbag2 bag opened for reading; use as a context manager."""

    def __init__(self, path: str | Path, registry: TypeRegistry | None = None):
        """Open ``path`` (bag directory or storage file); raises BagError if unusable."""
        self.path = Path(path)
        self.registry = registry or TypeRegistry()
        self.problems: list[str] = []
        self._tmp = tempfile.TemporaryDirectory(prefix='vla_bag_')
        self.files: list[_StorageFile] = []
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------- open
    def _open(self) -> None:
        if not self.path.exists():
            raise BagError(f'{self.path} does not exist')
        if self.path.is_file():
            storage = STORAGE_OF_SUFFIX.get(self.path.suffix)
            if storage is None:
                raise BagError(f'{self.path} is neither a bag directory nor a .db3/.mcap file')
            self.metadata = self._metadata_without_yaml([self.path], storage)
            paths = [self.path]
        else:
            paths = self._paths_from_metadata()
        for path in paths:
            opened = self._open_file(path)
            if opened is not None:
                self.files.append(opened)
        if not self.files:
            raise BagError(f'{self.path}: no storage file could be read: '
                           + '; '.join(self.problems))
        self._register_definitions()
        self._merge_topics()

    def _paths_from_metadata(self) -> list[Path]:
        try:
            self.metadata = read_metadata(self.path)
        except MetadataError as exc:
            found = sorted([p for s in STORAGE_OF_SUFFIX for p in self.path.glob(f'*{s}')]
                           + [p for s in STORAGE_OF_SUFFIX
                              for p in self.path.glob(f'*{s}.zstd')], key=_natural_key)
            if not found:
                raise BagError(f'{self.path} is not a rosbag2 bag: {exc}, and there are no '
                               f'.db3/.mcap files in it') from None
            self.problems.append(f'{exc}; reading the {len(found)} storage file(s) found '
                                 f'instead (vla-ros bag reindex rebuilds metadata.yaml)')
            suffix = found[0].name.removesuffix('.zstd')
            storage = STORAGE_OF_SUFFIX[Path(suffix).suffix]
            self.metadata = self._metadata_without_yaml(found, storage)
            return found
        if self.metadata.version > 9:
            self.problems.append(f'metadata version {self.metadata.version} is newer than '
                                 f'9, the newest this reader knows; reading it anyway')
        if self.metadata.storage not in ('sqlite3', 'mcap'):
            raise BagError(f'{self.path}: storage plugin {self.metadata.storage!r} is not '
                           f'supported (sqlite3 and mcap are)')
        paths = []
        for info in self.metadata.files:
            path = self.path / Path(info.path).name
            if path.exists():
                paths.append(path)
            else:
                self.problems.append(f'{info.path}: listed in metadata.yaml but missing; '
                                     f'skipped')
        return paths

    @staticmethod
    def _metadata_without_yaml(paths, storage) -> BagMetadata:
        return BagMetadata(version=0, storage=storage,
                           files=[FileInfo(p.name) for p in paths], topics=[])

    def _open_file(self, path: Path) -> _StorageFile | None:
        display = path.name
        storage = self.metadata.storage
        if self.metadata.compression_mode == 'file' or path.suffix == '.zstd':
            try:
                path = self._decompress_file(path)
            except Exception as exc:  # noqa: BLE001
                self.problems.append(f'{display}: cannot decompress ({exc}); skipped')
                return None
        if storage == 'sqlite3':
            path = self._recover_sqlite(path, display)
        try:
            return _RosbagsFile(path, display, self.problems, storage, Path(self._tmp.name))
        except Exception as exc:  # noqa: BLE001 - damaged: salvage what we can
            self.problems.append(f'{display}: cannot be opened normally '
                                 f'({type(exc).__name__}: {exc})')
            return _salvage(path, storage, display, self.problems, Path(self._tmp.name))

    def _decompress_file(self, path: Path) -> Path:
        from backports import zstd

        out = Path(self._tmp.name) / path.name.removesuffix('.zstd')
        with zstd.open(path, 'rb') as src, open(out, 'wb') as dst:
            shutil.copyfileobj(src, dst)
        return out

    def _recover_sqlite(self, path: Path, display: str) -> Path:
        sidecars = [p for p in (Path(f'{path}-wal'), Path(f'{path}-journal'))
                    if p.exists() and p.stat().st_size > 0]
        if not sidecars:
            return path
        work = Path(self._tmp.name) / f'recovered_{display}'
        shutil.copy2(path, work)
        for side in sidecars:
            shutil.copy2(side, Path(f'{work}{side.name[len(path.name):]}'))
        try:
            db = sqlite3.connect(work)  # a normal open replays the WAL / rolls back
            db.execute('PRAGMA wal_checkpoint(TRUNCATE)')
            db.execute('PRAGMA journal_mode=DELETE')
            db.close()
        except sqlite3.Error as exc:
            self.problems.append(f'{display}: unfinished write-ahead log could not be '
                                 f'applied ({exc}); reading the main file only')
            return path
        self.problems.append(f'{display}: recording did not finish cleanly (leftover '
                             f'{", ".join(s.name for s in sidecars)}); recovered in a '
                             f'temporary copy (vla-ros bag reindex fixes the bag itself)')
        return work

    def _register_definitions(self) -> None:
        for f in self.files:
            for c in f.connections:
                if c.definition:
                    self.registry.register_definition(c.msgtype, c.definition, c.encoding)

    def _merge_topics(self) -> None:
        """Topics = metadata topics plus anything the storage files declare."""
        topics: dict[tuple[str, str], TopicInfo] = {
            (t.name, t.msgtype): TopicInfo(t.name, t.msgtype, t.message_count,
                                           t.serialization_format, list(t.offered_qos),
                                           t.type_hash)
            for t in self.metadata.topics}
        from_files: dict[tuple[str, str], int] = {}
        for f in self.files:
            for c in f.connections:
                key = (c.topic, c.msgtype)
                from_files[key] = from_files.get(key, 0) + c.count
                if key not in topics:
                    topics[key] = TopicInfo(c.topic, c.msgtype, 0, 'cdr',
                                            list(c.offered_qos), c.type_hash)
        read_all = len(self.files) == len(self.metadata.files) and not self.problems
        for key, info in topics.items():
            if not read_all or info.message_count == 0:
                info.message_count = from_files.get(key, 0)
        self.topics = list(topics.values())

    # ------------------------------------------------------------ properties
    @property
    def start_ns(self) -> int:
        """Time of the first readable message (ns)."""
        starts = [f.start_ns for f in self.files if f.start_ns is not None]
        return min(starts) if starts else 0

    @property
    def end_ns(self) -> int:
        """Time of the last readable message (ns)."""
        ends = [f.end_ns for f in self.files if f.end_ns is not None]
        return max(ends) if ends else 0

    @property
    def duration_ns(self) -> int:
        """Span of the readable messages."""
        return max(0, self.end_ns - self.start_ns)

    @property
    def message_count(self) -> int:
        """Readable messages (salvaged files count what was recovered)."""
        return sum(f.count for f in self.files)

    def topic(self, name: str) -> TopicInfo | None:
        """The topic called ``name`` (the first, if several types share the name)."""
        return next((t for t in self.topics if t.name == name), None)

    # -------------------------------------------------------------- reading
    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all if None) in [start_ns, stop_ns), by timestamp."""
        wanted = None if topics is None else set(topics)
        decompress = self.metadata.compression_mode == 'message'
        streams = [self._stream(i, f, wanted, start_ns, stop_ns, decompress)
                   for i, f in enumerate(self.files)]
        for _, _, _, message in heapq.merge(*streams, key=lambda r: (r[0], r[1], r[2])):
            yield message

    def _stream(self, index, storage_file, wanted, start_ns, stop_ns, decompress):
        seq = 0
        for conn, ts, data in storage_file.rows(start_ns, stop_ns):
            if wanted is not None and conn.topic not in wanted:
                continue
            if decompress:
                try:
                    from backports import zstd

                    data = zstd.decompress(data)
                except Exception as exc:  # noqa: BLE001
                    self.problems.append(f'{storage_file.display}: message on {conn.topic} '
                                         f'at {ts * 1e-9:.3f}s does not decompress ({exc})')
                    continue
            seq += 1
            yield ts, index, seq, BagMessage(conn.topic, conn.msgtype, ts, bytes(data))

    def decode(self, message: BagMessage):
        """Deserialize a message; raises UnknownTypeError or ValueError (corrupt CDR)."""
        try:
            return self.registry.deserialize(message.data, message.msgtype)
        except UnknownTypeError:
            raise
        except Exception as exc:  # noqa: BLE001 - rosbags raises assorted errors on garbage
            raise ValueError(f'corrupt {message.msgtype} message on {message.topic} at '
                             f'{message.timestamp * 1e-9:.3f}s: {type(exc).__name__}: '
                             f'{exc}') from None

    def close(self) -> None:
        """Close every file and drop temporary copies."""
        for f in self.files:
            try:
                f.close()
            except Exception:  # noqa: BLE001, S110 - closing a damaged file may fail
                pass
        self.files = []
        self._tmp.cleanup()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

