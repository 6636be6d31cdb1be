"""Message definitions for bags: which types we can decode, hash and describe.

A bag written by rosbag2 (Iron and later) carries the definition of every type it holds;
older bags (Humble) carry only type names. :class:`TypeRegistry` starts from the ROS 2
Kilted standard types shipped with ``rosbags`` and resolves any other type on demand from,
in order: the bag's own definitions (:meth:`TypeRegistry.register_definition`), this
project's ``msg/`` for ``vla_ros_msgs``, and ``share/<pkg>/msg/<Type>.msg`` of installed
packages (the venv, ``AMENT_PREFIX_PATH``), the way rosbag2 itself finds definitions.

A bag's definition of one of our own types wins over ``msg/``: our messages gain fields
(``ActionChunk.buffered_after_command``), and a bag recorded before must still decode
with what it was written with. For standard types the built-in definition wins.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

_MSG_DIR = Path(__file__).resolve().parent.parent.parent / 'msg'
OUR_PACKAGE = 'vla_ros_msgs'


class UnknownTypeError(KeyError):
    """A message type whose definition is neither built in, installed nor in the bag."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else 'unknown message type'


def _share_dirs() -> list[Path]:
    prefixes = [Path(sys.prefix)]
    for entry in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if entry:
            prefixes.append(Path(entry))
    seen, out = set(), []
    for prefix in prefixes:
        share = prefix / 'share'
        if share.is_dir() and share not in seen:
            seen.add(share)
            out.append(share)
    return out


def split_type(msgtype: str) -> tuple[str, str, str]:
    """'pkg/msg/Name' -> ('pkg', 'msg', 'Name'); 'pkg/Name' is read as a msg type."""
    parts = msgtype.strip('/').split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f'malformed message type name {msgtype!r} (expected pkg/msg/Name)')
    return parts[0], parts[1], parts[2]


class TypeRegistry:
    """A rosbags typestore that learns types from bags and installed packages."""

    def __init__(self):
        self.store = get_typestore(Stores.ROS2_KILTED)
        self._lock = threading.Lock()
        self._failed: dict[str, str] = {}
        self._ours = _our_definitions()  # registered when first needed (see the module doc)

    def _register_ours(self, msgtype: str) -> None:
        types = self._ours.get(msgtype)
        if types is None:
            return
        for _, fields in types.values():  # our types nested in it first
            for _, desc in fields:
                for ref in _referenced_types(desc):
                    if not self.knows(ref):
                        self._register_ours(ref)
        with self._lock:
            self.store.register({k: v for k, v in types.items() if not self.knows(k)})

    def knows(self, msgtype: str) -> bool:
        """Whether ``msgtype`` (and so all its field types) can be decoded now."""
        return msgtype in self.store.fielddefs

    def register_definition(self, msgtype: str, definition: str, encoding: str = 'ros2msg'
                            ) -> bool:
        """Learn ``msgtype`` from a bag's stored definition; False if it cannot be parsed.

        Definitions of types we already know are ignored: the built-in one is canonical,
        and a bag from an older distro may carry an older revision of a standard type.
        """
        if not definition or self.knows(msgtype):
            return self.knows(msgtype)
        try:
            if encoding == 'ros2idl' or definition.startswith('=' * 80 + '\nIDL: '):
                types = get_types_from_idl(definition)
            else:
                types = get_types_from_msg(definition, msgtype)
            types = {k: v for k, v in types.items() if not self.knows(k)}
            with self._lock:
                self.store.register(types)
        except Exception as exc:  # noqa: BLE001 - any parser error means "cannot decode"
            self._failed[msgtype] = f'its stored definition does not parse: {exc}'
            return False
        return self.knows(msgtype)

    def resolve(self, msgtype: str) -> bool:
        """Make ``msgtype`` known from installed ``.msg`` files if needed; True if known."""
        if self.knows(msgtype):
            return True
        if msgtype in self._failed:
            return False
        if msgtype in self._ours:
            self._register_ours(msgtype)
            return self.knows(msgtype)
        try:
            self._load_installed(msgtype, depth=0)
        except (UnknownTypeError, ValueError) as exc:
            self._failed[msgtype] = str(exc)
            return False
        return self.knows(msgtype)

    def why_unknown(self, msgtype: str) -> str:
        """A human explanation for a type :meth:`resolve` could not find."""
        return self._failed.get(msgtype, f'no definition of {msgtype!r} is available')

    def _load_installed(self, msgtype: str, depth: int) -> None:
        if self.knows(msgtype):
            return
        if depth > 32:
            raise UnknownTypeError(f'type nesting too deep at {msgtype!r}')
        pkg, kind, name = split_type(msgtype)
        for share in _share_dirs():
            path = share / pkg / kind / f'{name}.msg'
            if path.is_file():
                types = get_types_from_msg(path.read_text(), f'{pkg}/{kind}/{name}')
                break
        else:
            raise UnknownTypeError(
                f'no definition of {msgtype!r}: not a ROS 2 Kilted standard type, not in the '
                f'bag, and no {pkg}/{kind}/{name}.msg under {[str(s) for s in _share_dirs()]}')
        # Load nested field types first so registration can resolve them.
        for _, fields in types.values():
            for _, desc in fields:
                for ref in _referenced_types(desc):
                    self._load_installed(ref, depth + 1)
        with self._lock:
            self.store.register(types)

    def deserialize(self, data: bytes | memoryview, msgtype: str):
        """Decode CDR ``data``; raises UnknownTypeError or a rosbags decoding error."""
        if not self.resolve(msgtype):
            raise UnknownTypeError(self.why_unknown(msgtype))
        return self.store.deserialize_cdr(data, msgtype)

    def serialize(self, message, msgtype: str) -> bytes:
        """Encode a rosbags message object as CDR."""
        if not self.resolve(msgtype):
            raise UnknownTypeError(self.why_unknown(msgtype))
        return bytes(self.store.serialize_cdr(message, msgtype))

    def definition(self, msgtype: str) -> tuple[str, str]:
        """(ros2msg definition text, RIHS01 hash) for writing a bag; ('', '') if unknown."""
        if not self.resolve(msgtype):
            return '', ''
        text, _ = self.store.generate_msgdef(msgtype, ros_version=2)
        return text, self.store.hash_rihs01(msgtype)


def _our_definitions() -> dict[str, dict]:
    """``vla_ros_msgs/msg/<Name>`` -> its rosbags types, from ``msg/`` (or installed)."""
    sources = sorted(_MSG_DIR.glob('*.msg'))
    if not sources:
        for share in _share_dirs():
            sources = sorted((share / OUR_PACKAGE / 'msg').glob('*.msg'))
            if sources:
                break
    return {f'{OUR_PACKAGE}/msg/{path.stem}':
            get_types_from_msg(path.read_text(), f'{OUR_PACKAGE}/msg/{path.stem}')
            for path in sources}


def _referenced_types(desc) -> list[str]:
    """Message type names a rosbags field description refers to."""
    out = []
    node_type, args = desc
    if int(node_type) == 2:  # NAME: a nested message
        out.append(args)
    elif int(node_type) in (3, 4):  # ARRAY / SEQUENCE of something
        out.extend(_referenced_types(args[0]))
    return out


def rclpy_message_class(msgtype: str):
    """Import the rclpy class of ``pkg/msg/Name``; raises UnknownTypeError if not installed."""
    pkg, kind, name = split_type(msgtype)
    try:
        module = importlib.import_module(f'{pkg}.{kind}')
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise UnknownTypeError(
            f'message type {msgtype!r} is not installed in this Python environment '
            f'({type(exc).__name__}: {exc})') from None
