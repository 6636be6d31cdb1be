"""Image messages <-> numpy arrays: the one tested path from camera topics to RGB arrays.

``image_msg_to_rgb`` / ``compressed_msg_to_rgb`` turn ``sensor_msgs/Image`` and
``sensor_msgs/CompressedImage`` into HxWx3 uint8 RGB, ``rgb_to_image_msg`` /
``rgb_to_compressed_msg`` go the other way. What a policy then sees of the array (resizing,
normalization) is the pure core's :mod:`vla_ros.images`. The readers only use the message
fields (duck typing), so rosbags-deserialized messages work too.

We deliberately do not use ``cv_bridge``: the PyPI ``cv-bridge`` package is a broken
ROS 1 port, and a real ROS 2 cv_bridge is not always installed (pip-only setups). Even
when it is importable we ignore it, so that every deployment runs the same, tested code
path. Conversions use ``np.frombuffer`` views and single-pass OpenCV calls, no per-pixel
Python loops.

Supported raw encodings: rgb8, bgr8, rgba8, bgra8, mono8 (replicated to 3 channels),
mono16 (full 16-bit range mapped to 0..255), 16UC1 (depth in millimetres) and 32FC1 (depth
in metres). Depth is mapped linearly from a *fixed* range (``depth_range_mm``, default
0..4000 mm) to 0..255 and replicated to 3 channels: a fixed range keeps the same depth the
same grey level from frame to frame, which per-frame min-max scaling would not; values
outside the range saturate and NaN/Inf depth becomes 0.
"""

from __future__ import annotations

import array
import math
import sys
from typing import Any

import cv2
import numpy as np

from vla_ros.images import ImageConversionError, check_rgb

# encoding -> (channels, bytes per channel); depth/mono16 need scaling to uint8
_ENCODINGS: dict[str, tuple[int, int]] = {
    'rgb8': (3, 1),
    'bgr8': (3, 1),
    'rgba8': (4, 1),
    'bgra8': (4, 1),
    'mono8': (1, 1),
    'mono16': (1, 2),
    '16uc1': (1, 2),
    '32fc1': (1, 4),
}
SUPPORTED_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', '16UC1', '32FC1')
_TO_RGB = {
    'bgr8': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB,
}
DEFAULT_DEPTH_RANGE_MM = (0.0, 4000.0)
__all__ = ['DEFAULT_DEPTH_RANGE_MM', 'ImageConversionError', 'SUPPORTED_ENCODINGS',
           'compressed_msg_to_rgb', 'header_stamp_seconds', 'image_msg_to_rgb', 'msg_to_rgb',
           'rgb_to_compressed_msg', 'rgb_to_image_msg', 'stamp_to_seconds']


def _byte_view(data: Any, what: str) -> np.ndarray:
    """Return ``data`` (bytes, array.array, memoryview, ndarray or list) as flat uint8."""
    if isinstance(data, np.ndarray):
        if data.dtype == np.uint8:
            return data.reshape(-1)
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    try:  # plain lists of ints, as hand-built messages may carry
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise ImageConversionError(f'{what}: data is not a byte buffer ({e})') from None


def _dim(msg: Any, field: str) -> int:
    value = getattr(msg, field, None)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ImageConversionError(f'image {field} must be a non-negative integer, got {value!r}')
    return int(value)


def _depth_to_uint8(
    depth: np.ndarray, depth_range_mm: tuple[float, float], mm_per_unit: float
) -> np.ndarray:
    lo, hi = (float(v) for v in depth_range_mm)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f'depth_range_mm must be finite (low, high) with low < high, got '
                         f'{depth_range_mm!r}')
    # Clip in the message's units first so huge float values cannot overflow when scaled.
    lo, hi = lo / mm_per_unit, hi / mm_per_unit
    d = np.nan_to_num(depth.astype(np.float32), nan=lo, posinf=lo, neginf=lo)
    np.clip(d, lo, hi, out=d)
    d -= lo
    d *= 255.0 / (hi - lo)
    d += 0.5  # round to nearest
    return d.astype(np.uint8)


def image_msg_to_rgb(
    msg: Any,
    depth_range_mm: tuple[float, float] = DEFAULT_DEPTH_RANGE_MM,
    copy: bool = False,
) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` to an HxWx3 uint8 RGB array.

    Row padding (``step``) and ``is_bigendian`` are honoured. For rgb8 the result is a view
    of ``msg.data`` unless ``copy`` is true (other encodings always produce a new array).
    Raises ImageConversionError for an unsupported encoding, ``step`` smaller than a row,
    or ``data`` shorter than ``step * height``.
    """
    encoding = getattr(msg, 'encoding', None)
    key = encoding.strip().lower() if isinstance(encoding, str) else None
    if key not in _ENCODINGS:
        raise ImageConversionError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(SUPPORTED_ENCODINGS)}'
        )
    height, width, step = _dim(msg, 'height'), _dim(msg, 'width'), _dim(msg, 'step')
    channels, depth = _ENCODINGS[key]
    bpp = channels * depth
    what = f'{encoding} image {width}x{height}'
    if height == 0 or width == 0:
        raise ImageConversionError(f'{what}: image is empty')
    if step < width * bpp:
        raise ImageConversionError(
            f'{what}: step {step} is smaller than width * bytes_per_pixel = '
            f'{width} * {bpp} = {width * bpp}'
        )
    buf = _byte_view(getattr(msg, 'data', None), what)
    if buf.size < step * height:
        raise ImageConversionError(
            f'{what}: data has {buf.size} bytes, expected step * height = '
            f'{step} * {height} = {step * height}'
        )
    # Strided view: rows of `step` bytes, padding cut off; no copy.
    rows = buf[: step * height].reshape(height, step)[:, : width * bpp]
    if depth == 1:
        pixels = rows.reshape(height, width, channels)
        if key == 'rgb8':
            return pixels.copy() if copy else pixels
        return cv2.cvtColor(np.squeeze(pixels, axis=2) if channels == 1 else pixels, _TO_RGB[key])
    big = bool(getattr(msg, 'is_bigendian', False))
    dtype = np.dtype(('>' if big else '<') + ('u2' if depth == 2 else 'f4'))
    values = rows.view(dtype)  # last axis is contiguous, so this stays a view
    if key == 'mono16':
        gray = (values >> 8).astype(np.uint8)
    elif key == '16uc1':
        gray = _depth_to_uint8(values, depth_range_mm, 1.0)
    else:  # 32FC1 depth in metres
        gray = _depth_to_uint8(values, depth_range_mm, 1000.0)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


_IMREAD_RGB = getattr(cv2, 'IMREAD_COLOR_RGB', None)


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg/png) to HxWx3 uint8 RGB.

    Raises ImageConversionError if the data is empty or cannot be decoded, or for
    ``compressedDepth`` payloads (their custom header is not supported).
    """
    fmt = str(getattr(msg, 'format', ''))
    if 'compresseddepth' in fmt.lower():
        raise ImageConversionError(f'compressed format {fmt!r} (compressedDepth) is not supported')
    buf = _byte_view(getattr(msg, 'data', None), f'compressed image ({fmt!r})')
    if buf.size == 0:
        raise ImageConversionError(f'compressed image ({fmt!r}) has no data')
    try:
        if _IMREAD_RGB is not None:
            img = cv2.imdecode(buf, _IMREAD_RGB)
        else:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            img = None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    except cv2.error as e:
        img, reason = None, str(e).strip().splitlines()[-1]
    else:
        reason = 'not a decodable jpeg/png'
    if img is None:
        raise ImageConversionError(
            f'cannot decode compressed image (format {fmt!r}, {buf.size} bytes): {reason}'
        )
    return img


def msg_to_rgb(msg: Any, **kwargs: Any) -> np.ndarray:
    """Convert either an Image or a CompressedImage (told apart by ``format``) to RGB."""
    if hasattr(msg, 'format') and not hasattr(msg, 'encoding'):
        return compressed_msg_to_rgb(msg)
    return image_msg_to_rgb(msg, **kwargs)


def stamp_to_seconds(stamp: Any) -> float:
    """Convert a builtin_interfaces/Time (``sec``, ``nanosec``) to float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def header_stamp_seconds(msg: Any) -> float:
    """Return ``msg.header.stamp`` in float seconds (the Observation stamp)."""
    return stamp_to_seconds(msg.header.stamp)


def _make_stamp(stamp: Any) -> Any:
    from builtin_interfaces.msg import Time

    if stamp is None:
        return Time()
    if hasattr(stamp, 'sec') and hasattr(stamp, 'nanosec'):
        return stamp
    if hasattr(stamp, 'to_msg'):  # rclpy.time.Time
        return stamp.to_msg()
    ns = int(round(float(stamp) * 1e9))
    if ns < 0:
        raise ValueError(f'stamp must be >= 0 seconds, got {stamp!r}')
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _byte_array(arr: np.ndarray) -> array.array:
    out = array.array('B')
    out.frombytes(memoryview(np.ascontiguousarray(arr)).cast('B'))
    return out


def rgb_to_image_msg(
    rgb: np.ndarray, encoding: str = 'rgb8', stamp: Any = None, frame_id: str = ''
) -> Any:
    """Build a ``sensor_msgs/Image`` from an array.

    rgb8/bgr8/rgba8/bgra8/mono8 take HxWx3 uint8 RGB (mono8 also accepts HxW uint8);
    16UC1/mono16 take HxW uint16 and 32FC1 HxW float32, written in native byte order.
    ``stamp`` is None (zero), float seconds, a builtin_interfaces Time or an rclpy Time.
    """
    from sensor_msgs.msg import Image

    key = encoding.lower()
    if key not in _ENCODINGS:
        raise ImageConversionError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(SUPPORTED_ENCODINGS)}'
        )
    channels, depth = _ENCODINGS[key]
    if depth == 1 and not (key == 'mono8' and isinstance(rgb, np.ndarray) and rgb.ndim == 2
                           and rgb.dtype == np.uint8):
        rgb = check_rgb(rgb)
        if key != 'rgb8':
            code = {'bgr8': cv2.COLOR_RGB2BGR, 'rgba8': cv2.COLOR_RGB2RGBA,
                    'bgra8': cv2.COLOR_RGB2BGRA, 'mono8': cv2.COLOR_RGB2GRAY}[key]
            rgb = cv2.cvtColor(rgb, code)
    elif depth > 1:
        want = np.uint16 if depth == 2 else np.float32
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 2 or rgb.dtype != want:
            got = f'{rgb.dtype} {rgb.shape}' if isinstance(rgb, np.ndarray) else type(rgb)
            raise ImageConversionError(
                f'{encoding} needs an HxW {np.dtype(want)} array, got {got}'
            )
    msg = Image()
    msg.header.stamp = _make_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = next(e for e in SUPPORTED_ENCODINGS if e.lower() == key)
    msg.is_bigendian = int(depth > 1 and sys.byteorder == 'big')
    msg.step = msg.width * channels * depth
    msg.data = _byte_array(rgb)
    return msg


def rgb_to_compressed_msg(
    rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90, stamp: Any = None, frame_id: str = ''
) -> Any:
    """Build a ``sensor_msgs/CompressedImage`` (jpeg or png) from HxWx3 uint8 RGB."""
    from sensor_msgs.msg import CompressedImage

    rgb = check_rgb(rgb)
    if fmt not in ('jpeg', 'png'):
        raise ValueError(f'fmt must be "jpeg" or "png", got {fmt!r}')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png',
                               cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f'cv2 could not encode a {rgb.shape} image as {fmt}')
    msg = CompressedImage()
    msg.header.stamp = _make_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.format = fmt
    msg.data = _byte_array(encoded)
    return msg
