"""Safetensors reading and the strict-loading report shared by vla_ros's weight loaders.

A model never loads silently wrong: every loader compares the file's tensors with the
model's and reports missing, unexpected and mis-shaped tensors together, in one
:class:`PolicyLoadError` (:func:`weight_mismatch_error`).
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

from vla_ros.policies.contract import PolicyLoadError

LIST_LIMIT = 20
_ST_DTYPES = {'F32': 'float32', 'F16': 'float16', 'BF16': 'bfloat16', 'F64': 'float64',
              'I64': 'int64', 'I32': 'int32', 'U8': 'uint8', 'BOOL': 'bool'}


def summary(names, limit: int = LIST_LIMIT) -> str:
    """``a, b, c ... and N more``: the first ``limit`` of ``names``, sorted."""
    names = sorted(names)
    more = f' ... and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def weight_mismatch_error(where, what: str, missing=(), unexpected=(),
                          mismatched=()) -> PolicyLoadError | None:
    """One error naming every missing, unexpected and mis-shaped tensor (None if none).

    ``what`` says what the weights failed to match (e.g. ``the pi05 architecture of
    config.json``); ``mismatched`` entries are already formatted with both shapes.
    """
    problems = [f'{what_} {len(items)}: {summary(items)}'
                for what_, items in (('missing', missing), ('unexpected', unexpected),
                                     ('mis-shaped', mismatched)) if items]
    if not problems:
        return None
    return PolicyLoadError(f'{where}: weights do not match {what}; ' + '; '.join(problems))


def read_header(path: Path) -> tuple[int, dict]:
    """The data offset and the tensor entries (name -> dtype/shape/offsets) of ``path``."""
    try:
        with open(path, 'rb') as f:
            (header_len,) = struct.unpack('<Q', f.read(8))
            header = json.loads(f.read(header_len))
    except (OSError, ValueError, struct.error) as exc:
        raise PolicyLoadError(f'{path}: not a readable safetensors file: {exc}') from exc
    if not isinstance(header, dict):
        raise PolicyLoadError(f'{path}: not a readable safetensors file: bad header')
    header.pop('__metadata__', None)
    return 8 + header_len, header


class SafetensorsMap:
    """Tensors of a .safetensors file viewed through one copy-on-write memory map."""

    def __init__(self, path: Path):
        """Parse the header; map the file (nothing is read until a tensor is used)."""
        self.path = path
        self._start, self.entries = read_header(path)
        try:
            with open(path, 'rb') as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:
            raise PolicyLoadError(f'{path}: not a readable safetensors file: {exc}') from exc

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of ``name``."""
        return tuple(self.entries[name]['shape'])

    def tensor(self, name: str):
        """``name`` as a tensor backed by the memory map (no copy)."""
        import torch

        entry = self.entries[name]
        if entry['dtype'] not in _ST_DTYPES:
            raise PolicyLoadError(f'{self.path}: tensor {name!r} has unsupported dtype '
                                  f'{entry["dtype"]}')
        dtype = getattr(torch, _ST_DTYPES[entry['dtype']])
        begin, end = entry['data_offsets']
        shape = tuple(entry['shape'])
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        flat = torch.frombuffer(self._map, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                offset=self._start + begin)
        return flat.view(shape)
