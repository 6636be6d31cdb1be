"""One tick's serialized commands in shared memory, from the inference node to its control process.

The node computes the command for control deadline ``k`` a little before it is due and
writes the serialized messages here; the control process
(:mod:`vla_ros.runtime.control_process`) publishes them at the deadline. The control
process answers in a separate area: the last deadline it published and how many
subscribers each of its publishers has matched, which the node needs to hand over
without a gap (see :class:`vla_ros.nodes.control_relay.Handover`).

A single writer and a single reader, no lock: the writer bumps a sequence number to odd,
writes, stores a CRC-32 of what it wrote and bumps the sequence to even. A reader accepts
a copy only when the sequence was even and unchanged around it *and* the CRC matches, so
a torn read is detected even on CPUs that reorder stores (Python has no memory fences).
The segment is a plain file in /dev/shm opened by path on both sides:
``multiprocessing.shared_memory`` would register it with the reader's resource tracker,
which unlinks it when the reader exits.
"""

import mmap
import os
import secrets
import struct
import zlib
from dataclasses import dataclass

MAX_TOPICS = 8
CAPACITY = 64 * 1024  # a joint command for a 7-DoF arm is ~200 bytes; room for 16+ names each
_MAGIC = 0x564C4131  # 'VLA1'
# magic u32 | seq u64 | k i64 | count u32 | payload length u32 | crc u32
_WRITER = struct.Struct('<IQqIII')
# published_k i64 | late u64 | missed u64 | subscribers i32 x MAX_TOPICS
_READER = struct.Struct(f'<qQQ{MAX_TOPICS}i')
_READER_AT = 64
_PAYLOAD_AT = 192
_ENTRY = struct.Struct('<HI')  # topic index, length
SIZE = _PAYLOAD_AT + CAPACITY
NOTHING_PUBLISHED = -1


@dataclass(frozen=True)
class Feedback:
    """What the control process reports back."""

    published_k: int  # last deadline index published (NOTHING_PUBLISHED: none yet)
    late: int  # ticks published after their deadline (the node's slot came late)
    missed: int  # deadlines with no slot for them in time (nothing published)
    subscribers: tuple  # matched subscriptions per topic index


class CommandSlot:
    """The shared segment; :meth:`create` on the node's side, :meth:`open` in the child."""

    def __init__(self, path: str, mm: mmap.mmap, owner: bool):
        self.path = path
        self._mm = mm
        self._owner = owner
        self._seq = 0

    @classmethod
    def create(cls, prefix: str = 'vla_ros_cmd') -> 'CommandSlot':
        """A new zeroed segment with a unique name (unlinked by :meth:`close`)."""
        path = f'/dev/shm/{prefix}_{os.getpid()}_{secrets.token_hex(4)}'
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            mm = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        slot = cls(path, mm, owner=True)
        _WRITER.pack_into(mm, 0, _MAGIC, 0, NOTHING_PUBLISHED, 0, 0, 0)
        _READER.pack_into(mm, _READER_AT, NOTHING_PUBLISHED, 0, 0, *([0] * MAX_TOPICS))
        return slot

    @classmethod
    def open(cls, path: str) -> 'CommandSlot':
        """Map an existing segment (the control process's side)."""
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        if _WRITER.unpack_from(mm, 0)[0] != _MAGIC:
            mm.close()
            raise ValueError(f'{path} is not a vla_ros command slot')
        return cls(path, mm, owner=False)

    # ---------------------------------------------------------------- node side
    def write(self, k: int, messages) -> None:
        """Store the serialized ``messages`` [(topic index, bytes)] for deadline ``k``."""
        payload = b''.join(_ENTRY.pack(index, len(data)) + data for index, data in messages)
        if len(payload) > CAPACITY:
            raise ValueError(f'{len(payload)} bytes of commands exceed the slot\'s {CAPACITY}')
        for index, _ in messages:
            if not 0 <= index < MAX_TOPICS:
                raise ValueError(f'topic index {index} outside 0..{MAX_TOPICS - 1}')
        mm = self._mm
        self._seq += 1  # odd: a write in progress
        _WRITER.pack_into(mm, 0, _MAGIC, self._seq, 0, 0, 0, 0)
        mm[_PAYLOAD_AT:_PAYLOAD_AT + len(payload)] = payload
        crc = _crc(k, len(messages), payload)
        self._seq += 1
        _WRITER.pack_into(mm, 0, _MAGIC, self._seq, k, len(messages), len(payload), crc)

    def feedback(self) -> Feedback:
        """The control process's last report."""
        published, late, missed, *subscribers = _READER.unpack_from(self._mm, _READER_AT)
        return Feedback(published, late, missed, tuple(subscribers))

    # ------------------------------------------------------- control process side
    def read(self):
        """(k, [(topic index, bytes)]) of the last complete write; None while torn or empty."""
        mm = self._mm
        _, seq, k, count, length, crc = _WRITER.unpack_from(mm, 0)
        if seq % 2 or seq == 0 or length > CAPACITY:
            return None
        payload = bytes(mm[_PAYLOAD_AT:_PAYLOAD_AT + length])
        if _WRITER.unpack_from(mm, 0)[1] != seq or _crc(k, count, payload) != crc:
            return None
        messages, at = [], 0
        for _ in range(count):
            index, size = _ENTRY.unpack_from(payload, at)
            at += _ENTRY.size
            messages.append((index, payload[at:at + size]))
            at += size
        return k, messages

    def report(self, published_k: int, late: int, missed: int, subscribers) -> None:
        """Store the control process's state for the node (single writer: the process)."""
        counts = list(subscribers)[:MAX_TOPICS]
        counts += [0] * (MAX_TOPICS - len(counts))
        _READER.pack_into(self._mm, _READER_AT, published_k, late, missed, *counts)

    def remove(self) -> None:
        """Remove the segment by name (the control process, once its node has died)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Unmap; the owner also removes the segment."""
        try:
            self._mm.close()
        except BufferError:
            pass
        if self._owner:
            self.remove()


def _crc(k: int, count: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack('<qI', k, count)))
