"""Safetensors files read tensor by tensor into their destination, and written in shards.

A safetensors file is an 8-byte little-endian header length, a JSON header
(``name -> {dtype, shape, data_offsets}``) and the raw little-endian bytes. Big checkpoints
come as several such shards plus ``model.safetensors.index.json`` (``weight_map``: tensor
name -> shard file).

Reading uses ``os.pread`` straight into a freshly allocated tensor rather than a memory
map: pages of a mapped file count in the process's resident set for as long as the map
lives, so streaming a 15 GB checkpoint through ``mmap`` would show (and on a small robot
computer, cost) up to twice the weights; a positioned read leaves them in the kernel's page
cache, which the kernel drops first. The header is parsed here, so a truncated or
inconsistent file is an error naming the file and the tensor before anything is allocated.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from vla_ros.policies.contract import PolicyLoadError

SINGLE_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
DTYPES = {
    'BF16': torch.bfloat16, 'F16': torch.float16, 'F32': torch.float32, 'F64': torch.float64,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8,
    'U8': torch.uint8, 'BOOL': torch.bool,
}
# Linux returns at most this many bytes from one read call.
_MAX_READ = 0x7FFFF000


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies: its file, dtype, shape and absolute byte range."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    stop: int

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data."""
        return self.stop - self.start


def read_header(file: Path) -> dict[str, TensorEntry]:
    """The tensors of one safetensors file, checked against the file's size."""
    if sys.byteorder != 'little':
        raise PolicyLoadError('safetensors data is little-endian; this machine is not')
    try:
        size = file.stat().st_size
        with open(file, 'rb') as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise PolicyLoadError(f'{file}: not a safetensors file (shorter than 8 bytes)')
            length = int.from_bytes(prefix, 'little')
            if length > min(size - 8, 100_000_000):
                raise PolicyLoadError(f'{file}: header length {length} is impossible for a '
                                      f'{size}-byte file')
            header = json.loads(handle.read(length))
    except OSError as exc:
        raise PolicyLoadError(f'{file}: unreadable: {exc}') from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyLoadError(f'{file}: corrupt safetensors header: {exc}') from exc
    if not isinstance(header, dict):
        raise PolicyLoadError(f'{file}: corrupt safetensors header (not a JSON object)')
    base = 8 + length
    entries = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        try:
            dtype = DTYPES[info['dtype']]
            shape = tuple(int(d) for d in info['shape'])
            begin, end = (int(v) for v in info['data_offsets'])
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyLoadError(f'{file}: tensor {name!r} has an unreadable or unsupported '
                                  f'header entry {info!r}') from exc
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != math.prod(shape) * itemsize or begin < 0 or base + end > size:
            raise PolicyLoadError(f'{file}: tensor {name!r} ({info["dtype"]} {list(shape)}) '
                                  f'has byte range [{begin}, {end}) that does not fit its shape '
                                  f'or the file (truncated download?)')
        entries[name] = TensorEntry(file, dtype, shape, base + begin, base + end)
    return entries


def checkpoint_files(directory: Path) -> list[Path]:
    """The shard files of a checkpoint directory (from its index) or its single file."""
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding='utf-8'))['weight_map']
            files = sorted(set(weight_map.values()))
        except (OSError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise PolicyLoadError(f'{index}: unreadable index (need a "weight_map" object): '
                                  f'{exc}') from exc
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            raise PolicyLoadError(f'{index} names shard(s) that are not in {directory}: '
                                  f'{missing}')
        return [directory / f for f in files]
    if (directory / SINGLE_FILE).is_file():
        return [directory / SINGLE_FILE]
    unsafe = sorted(p.name for p in directory.glob('*') if p.suffix in ('.bin', '.pt', '.pth'))
    hint = f'; pickle-based {unsafe} are never loaded (they can run code)' if unsafe else ''
    raise PolicyLoadError(f'{directory} has no {INDEX_FILE} or {SINGLE_FILE}{hint}')


def checkpoint_tensors(directory: Path) -> dict[str, TensorEntry]:
    """Every tensor of a (sharded) checkpoint; an index that disagrees with a shard fails."""
    entries: dict[str, TensorEntry] = {}
    for file in checkpoint_files(directory):
        for name, entry in read_header(file).items():
            if name in entries:
                raise PolicyLoadError(f'tensor {name!r} is stored twice: in '
                                      f'{entries[name].file.name} and {file.name}')
            entries[name] = entry
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding='utf-8'))['weight_map']
        wrong = sorted(n for n, f in weight_map.items()
                       if n not in entries or entries[n].file.name != f)
        if wrong:
            raise PolicyLoadError(f'{index}: {len(wrong)} tensor(s) are not in the shard the '
                                  f'index names, e.g. {wrong[:5]}')
    return entries


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    """One tensor, read from its file into new CPU memory in the file's dtype."""
    raw = torch.empty(entry.nbytes, dtype=torch.uint8)
    view = memoryview(raw.numpy())
    fd = os.open(entry.file, os.O_RDONLY)
    try:
        done = 0
        while done < entry.nbytes:
            count = os.preadv(fd, [view[done:done + _MAX_READ]], entry.start + done)
            if count <= 0:
                raise PolicyLoadError(f'{entry.file}: file ended inside a tensor')
            done += count
    finally:
        os.close(fd)
    return raw.view(entry.dtype).reshape(entry.shape)


def write_shards(tensors, directory: Path, max_shard_bytes: int) -> list[Path]:
    """Write ``tensors`` (a dict, or an iterable of (name, tensor)) as shards + an index.

    Shards hold at most ``max_shard_bytes`` (one larger tensor gets a shard of its own) and
    are written as soon as they fill, so an iterable that makes its tensors one by one never
    needs the whole checkpoint in memory. A single shard is written as
    ``model.safetensors`` without an index, as transformers does.
    """
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    items = tensors.items() if isinstance(tensors, dict) else tensors
    parts: list[Path] = []
    weight_map: dict[str, int] = {}
    pending: dict[str, torch.Tensor] = {}
    size = total = 0

    def flush():
        part = directory / f'.part-{len(parts):05d}.safetensors'
        save_file(pending, str(part), metadata={'format': 'pt'})
        weight_map.update({name: len(parts) for name in pending})
        parts.append(part)
        pending.clear()

    for name, tensor in items:
        nbytes = tensor.numel() * tensor.element_size()
        if pending and size + nbytes > max_shard_bytes:
            flush()
            size = 0
        pending[name] = tensor.contiguous()
        size += nbytes
        total += nbytes
    if pending or not parts:
        flush()
    if len(parts) == 1:
        parts[0].rename(directory / SINGLE_FILE)
        return [directory / SINGLE_FILE]
    names = [f'model-{k + 1:05d}-of-{len(parts):05d}.safetensors' for k in range(len(parts))]
    for part, name in zip(parts, names, strict=True):
        part.rename(directory / name)
    (directory / INDEX_FILE).write_text(json.dumps(
        {'metadata': {'total_size': total},
         'weight_map': {n: names[k] for n, k in weight_map.items()}}, indent=2) + '\n')
    return [directory / name for name in names]
