"""Repair a bag in place after an interrupted recording (``vla-ros bag reindex``).

sqlite3 files: a normal open replays the leftover WAL (or rolls back a half-written
transaction), then the WAL is folded into the .db3. MCAP files without footer: the
complete records are rewritten into a new indexed file that replaces the old one.
Finally metadata.yaml is rebuilt from what the files really hold (custom_data kept).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from vla_ros.bags.metadata import (
    LATEST_VERSION,
    WRITABLE_VERSIONS,
    BagMetadata,
    FileInfo,
    MetadataError,
    TopicInfo,
    read_metadata,
    write_metadata,
)
from vla_ros.bags.reader import STORAGE_OF_SUFFIX, BagError, BagReader, _natural_key


def _finish_sqlite(path: Path) -> bool:
    sidecars = [Path(f'{path}{s}') for s in ('-wal', '-journal', '-shm')]
    if not any(p.exists() for p in sidecars):
        return False
    db = sqlite3.connect(path)
    try:
        db.execute('PRAGMA wal_checkpoint(TRUNCATE)')
        db.execute('PRAGMA journal_mode=DELETE')
    finally:
        db.close()
    return True


def _mcap_complete(path: Path) -> bool:
    from rosbags.rosbag2.storage_mcap import McapReader

    reader = McapReader(path)
    try:
        reader.open()
    except Exception:  # noqa: BLE001 - any failure means "needs rewriting"
        return False
    reader.close()
    return True


def _rewrite_mcap(path: Path, storage_file, version: int) -> None:
    from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9

    from vla_ros.bags.writer import _McapFile, _Topic, _yaml

    tmp = path.with_name(f'{path.stem}.rewrite.mcap')
    if tmp.exists():
        tmp.unlink()
    out = _McapFile(tmp, version, '')
    topics = {}
    for conn in storage_file.connections:
        qos = dump_qos_v8(conn.offered_qos) if version < 9 else \
            _yaml(dump_qos_v9(conn.offered_qos))
        topic = _Topic(len(topics) + 1, TopicInfo(conn.topic, conn.msgtype, 0, 'cdr',
                                                  conn.offered_qos, conn.type_hash),
                       conn.definition, qos)
        out.add_topic(topic)
        topics[id(conn)] = topic
    for conn, ts, data in storage_file.rows():
        out.write(topics[id(conn)], ts, data)
    out.close(version, '')
    os.replace(tmp, path)


def reindex(bag: str | Path) -> dict:
    """Finish every storage file and rewrite metadata.yaml; returns what was done."""
    bag = Path(bag)
    if not bag.is_dir():
        raise BagError(f'{bag} is not a bag directory')
    try:
        old = read_metadata(bag)
    except MetadataError:
        old = None
    version = old.version if old and old.version in WRITABLE_VERSIONS else LATEST_VERSION
    files = sorted([p for s in STORAGE_OF_SUFFIX for p in bag.glob(f'*{s}')
                    if '.rewrite.' not in p.name], key=_natural_key)
    if not files:
        raise BagError(f'{bag} holds no .db3 or .mcap files')
    actions = []
    for path in files:
        if path.suffix == '.db3' and _finish_sqlite(path):
            actions.append(f'{path.name}: write-ahead log applied')
    with BagReader(bag) as reader:
        by_name = {f.display: f for f in reader.files}
        for path in files:
            storage_file = by_name.get(path.name)
            if storage_file is not None and path.suffix == '.mcap' \
                    and not _mcap_complete(path):
                _rewrite_mcap(path, storage_file, version)
                actions.append(f'{path.name}: rewritten with index and footer '
                               f'({storage_file.count} messages)')
    storage = STORAGE_OF_SUFFIX[files[0].suffix]
    with BagReader(bag) as reader:
        # Count per file from the files themselves (metadata may be stale or missing).
        infos, topics = [], {}
        for storage_file in reader.files:
            path = Path(storage_file.display)
            start = storage_file.start_ns or 0
            end = storage_file.end_ns or start
            infos.append(FileInfo(path.name, start, end - start, storage_file.count))
            for conn in storage_file.connections:
                key = (conn.topic, conn.msgtype)
                if key not in topics:
                    topics[key] = TopicInfo(conn.topic, conn.msgtype, 0, 'cdr',
                                            list(conn.offered_qos), conn.type_hash)
                topics[key].message_count += conn.count
        if old:
            for t in old.topics:  # keep QoS/hash the old metadata knew
                known = topics.get((t.name, t.msgtype))
                if known is not None:
                    known.offered_qos = known.offered_qos or t.offered_qos
                    known.type_hash = known.type_hash or t.type_hash
        meta = BagMetadata(version=version, storage=storage, files=infos,
                           topics=list(topics.values()), start_ns=reader.start_ns,
                           duration_ns=reader.duration_ns, message_count=reader.message_count,
                           custom_data=dict(old.custom_data) if old else {},
                           ros_distro=old.ros_distro if old else '')
        remaining = list(reader.problems)
    write_metadata(bag, meta)
    actions.append(f'metadata.yaml rewritten: {meta.message_count} messages in '
                   f'{len(infos)} file(s)')
    return {'bag': str(bag), 'actions': actions, 'problems_left': remaining}
