"""``metadata.yaml`` of rosbag2 bags: tolerant parsing of versions 1-9, writing 5, 8 and 9.

What each version added (rosbag2's own history): 3 compression fields, 4 per-topic
``offered_qos_profiles`` (a YAML string), 5 per-file information (Humble writes 5), 6
``custom_data``, 7 ``type_description_hash``, 8 ``ros_distro`` (Iron and Jazzy write 8),
9 QoS profiles as a YAML list with named enums (written by newer releases; Kilted).
Readers of an older version ignore keys they do not know, and rosbag2 reads older
versions, so writing 9 by default and 5 or 8 on request covers Humble to Kilted.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.interfaces import Qos
from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9, parse_qos
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

WRITABLE_VERSIONS = (5, 8, 9)
LATEST_VERSION = 9
DISTRO_OF_VERSION = {5: 'humble', 8: 'jazzy', 9: 'kilted'}


class MetadataError(ValueError):
    """metadata.yaml is unreadable or lacks what a bag needs."""


@dataclass
class TopicInfo:
    """One topic of a bag: name, type, how it was offered, how many messages."""

    name: str
    msgtype: str
    message_count: int = 0
    serialization_format: str = 'cdr'
    offered_qos: list[Qos] = field(default_factory=list)
    type_hash: str = ''


@dataclass
class FileInfo:
    """One storage file of a (possibly split) bag."""

    path: str
    start_ns: int = 0
    duration_ns: int = 0
    message_count: int = 0


@dataclass
class BagMetadata:
    """The content of metadata.yaml (only the fields that carry meaning)."""

    version: int
    storage: str
    files: list[FileInfo]
    topics: list[TopicInfo]
    start_ns: int = 0
    duration_ns: int = 0
    message_count: int = 0
    compression_format: str = ''
    compression_mode: str = ''
    custom_data: dict[str, str] = field(default_factory=dict)
    ros_distro: str = ''

    @property
    def end_ns(self) -> int:
        """Time of the last message."""
        return self.start_ns + self.duration_ns


def _int(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MetadataError(f'{what} is not an integer: {value!r}') from None


def parse_metadata(text: str, source: str = 'metadata.yaml') -> BagMetadata:
    """Parse metadata.yaml text; raises MetadataError with the offending field named."""
    try:
        doc = YAML(typ='safe').load(text)
    except YAMLError as exc:
        raise MetadataError(f'{source}: not valid YAML: {exc}') from None
    if not isinstance(doc, dict) or not isinstance(
            doc.get('rosbag2_bagfile_information'), dict):
        raise MetadataError(f'{source}: no rosbag2_bagfile_information mapping')
    info = doc['rosbag2_bagfile_information']
    try:
        version = _int(info['version'], 'version')
        storage = str(info['storage_identifier'])
        paths = [str(p) for p in info.get('relative_file_paths') or []]
        topics = []
        for i, entry in enumerate(info.get('topics_with_message_count') or []):
            meta = entry['topic_metadata']
            qos = meta.get('offered_qos_profiles') or []
            try:
                profiles = parse_qos(qos)
            except Exception:  # noqa: BLE001 - unreadable QoS is not worth losing a bag over
                profiles = []
            topics.append(TopicInfo(
                name=str(meta['name']), msgtype=str(meta['type']),
                message_count=_int(entry.get('message_count', 0), f'topic {i} message_count'),
                serialization_format=str(meta.get('serialization_format', 'cdr')),
                offered_qos=profiles, type_hash=str(meta.get('type_description_hash') or '')))
        files = []
        for entry in info.get('files') or []:
            files.append(FileInfo(
                path=str(entry['path']),
                start_ns=_int(entry['starting_time']['nanoseconds_since_epoch'], 'file start'),
                duration_ns=_int(entry['duration']['nanoseconds'], 'file duration'),
                message_count=_int(entry.get('message_count', 0), 'file message_count')))
        if not files:  # versions < 5 list only the paths
            files = [FileInfo(path=p) for p in paths]
        custom = info.get('custom_data') or {}
        return BagMetadata(
            version=version, storage=storage, files=files, topics=topics,
            start_ns=_int(info['starting_time']['nanoseconds_since_epoch'], 'starting_time'),
            duration_ns=_int(info['duration']['nanoseconds'], 'duration'),
            message_count=_int(info.get('message_count', 0), 'message_count'),
            compression_format=str(info.get('compression_format') or ''),
            compression_mode=str(info.get('compression_mode') or ''),
            custom_data={str(k): str(v) for k, v in dict(custom).items()},
            ros_distro=str(info.get('ros_distro') or ''))
    except KeyError as exc:
        raise MetadataError(f'{source}: required field {exc} is missing') from None
    except (TypeError, AttributeError) as exc:
        raise MetadataError(f'{source}: malformed field ({exc})') from None


def read_metadata(bag_dir: str | Path) -> BagMetadata:
    """Read ``bag_dir/metadata.yaml``."""
    path = Path(bag_dir) / 'metadata.yaml'
    try:
        text = path.read_text()
    except OSError as exc:
        raise MetadataError(f'cannot read {path}: {exc.strerror or exc}') from None
    return parse_metadata(text, str(path))


def _topic_entry(topic: TopicInfo, version: int) -> dict:
    meta = {'name': topic.name, 'type': topic.msgtype,
            'serialization_format': topic.serialization_format}
    if version >= 9:
        meta['offered_qos_profiles'] = dump_qos_v9(topic.offered_qos)
    elif version >= 4:
        meta['offered_qos_profiles'] = dump_qos_v8(topic.offered_qos)
    if version >= 7:
        meta['type_description_hash'] = topic.type_hash
    return {'topic_metadata': meta, 'message_count': topic.message_count}


def metadata_document(meta: BagMetadata) -> dict:
    """The metadata.yaml mapping for ``meta.version`` (one of WRITABLE_VERSIONS)."""
    version = meta.version
    if version not in WRITABLE_VERSIONS:
        raise MetadataError(f'can write metadata versions {WRITABLE_VERSIONS}, not {version}')
    info = {
        'version': version,
        'storage_identifier': meta.storage,
        'duration': {'nanoseconds': meta.duration_ns},
        'starting_time': {'nanoseconds_since_epoch': meta.start_ns},
        'message_count': meta.message_count,
        'topics_with_message_count': [_topic_entry(t, version) for t in meta.topics],
        'compression_format': meta.compression_format,
        'compression_mode': meta.compression_mode,
        'relative_file_paths': [f.path for f in meta.files],
        'files': [{'path': f.path,
                   'starting_time': {'nanoseconds_since_epoch': f.start_ns},
                   'duration': {'nanoseconds': f.duration_ns},
                   'message_count': f.message_count} for f in meta.files],
    }
    if version >= 6:
        info['custom_data'] = dict(meta.custom_data) or None
    if version >= 8:
        info['ros_distro'] = meta.ros_distro or DISTRO_OF_VERSION.get(version, '')
    return {'rosbag2_bagfile_information': info}


def _dump(value) -> str:
    out = io.StringIO()
    yaml = YAML(typ='safe')
    yaml.default_flow_style = False
    yaml.dump(value, out)
    return out.getvalue()


def dump_metadata(meta: BagMetadata) -> str:
    """metadata.yaml text."""
    return _dump(metadata_document(meta))


def dump_inner_metadata(meta: BagMetadata) -> str:
    """The bagfile-information mapping alone, as storage files embed it."""
    return _dump(metadata_document(meta)['rosbag2_bagfile_information']).strip()


def write_metadata(bag_dir: str | Path, meta: BagMetadata) -> Path:
    """Write metadata.yaml atomically (a reader never sees half a file)."""
    path = Path(bag_dir) / 'metadata.yaml'
    tmp = path.with_suffix('.yaml.tmp')
    tmp.write_text(dump_metadata(meta))
    os.replace(tmp, path)
    return path
