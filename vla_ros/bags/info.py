"""``vla-ros bag info``: what a bag holds, like ``ros2 bag info``, plus what is damaged."""

from __future__ import annotations

import datetime

from vla_ros.bags.reader import BagReader


def bag_info(reader: BagReader) -> dict:
    """A JSON-ready description of an open bag."""
    meta = reader.metadata
    return {
        'path': str(reader.path),
        'storage': meta.storage,
        'metadata_version': meta.version or None,
        'ros_distro': meta.ros_distro or None,
        'files': [f.path for f in meta.files],
        'compression': f'{meta.compression_format}/{meta.compression_mode}'
        if meta.compression_mode else None,
        'start_ns': reader.start_ns,
        'end_ns': reader.end_ns,
        'duration_s': round(reader.duration_ns * 1e-9, 6),
        'message_count': reader.message_count,
        'topics': [{'name': t.name, 'type': t.msgtype, 'count': t.message_count,
                    'serialization_format': t.serialization_format,
                    'decodable': reader.registry.resolve(t.msgtype)}
                   for t in sorted(reader.topics, key=lambda t: t.name)],
        'custom_data_keys': sorted(meta.custom_data),
        'problems': list(reader.problems),
    }


def _when(ns: int) -> str:
    if not ns:
        return '-'
    stamp = datetime.datetime.fromtimestamp(ns * 1e-9, tz=datetime.timezone.utc)
    return f'{stamp:%Y-%m-%d %H:%M:%S.%f} UTC ({ns * 1e-9:.6f})'


def format_info(info: dict) -> str:
    """Human-readable text of :func:`bag_info`."""
    lines = [
        f'Files:             {", ".join(info["files"])}',
        f'Storage:           {info["storage"]}   metadata version: '
        f'{info["metadata_version"] or "none (reconstructed)"}   distro: '
        f'{info["ros_distro"] or "-"}',
        f'Duration:          {info["duration_s"]:.3f} s',
        f'Start:             {_when(info["start_ns"])}',
        f'End:               {_when(info["end_ns"])}',
        f'Messages:          {info["message_count"]}',
    ]
    if info['compression']:
        lines.append(f'Compression:       {info["compression"]}')
    width = max((len(t['name']) for t in info['topics']), default=10)
    lines.append('Topics:')
    for t in info['topics']:
        note = '' if t['decodable'] else '  (type unknown here: cannot decode)'
        lines.append(f'  {t["name"]:{width}s}  {t["type"]:38s} {t["count"]:8d} msgs{note}')
    if info['custom_data_keys']:
        lines.append(f'Custom data:       {", ".join(info["custom_data_keys"])}')
    if info['problems']:
        lines.append('Problems:')
        lines.extend(f'  - {p}' for p in info['problems'])
    return '\n'.join(lines)
