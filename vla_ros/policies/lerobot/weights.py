"""Reading LeRobot's ``model.safetensors``: its header, and its tensors through a memory map.

The strict comparison's report is :mod:`vla_ros.policies.strict_loading` (shared with
OpenVLA's released-layout loader).
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

from vla_ros.policies.contract import PolicyLoadError

_ST_DTYPES = {'F32': 'float32', 'F16': 'float16', 'BF16': 'bfloat16', 'F64': 'float64',
              'I64': 'int64', 'I32': 'int32', 'U8': 'uint8', 'BOOL': 'bool'}


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
