"""Serialized sensor_msgs/Image read without rclpy's Python message (vla_ros.nodes.image_cdr)."""

import struct

import numpy as np
import pytest
from rclpy.serialization import serialize_message

from vla_ros.images import ImageConversionError
from vla_ros.nodes.image_cdr import read_image
from vla_ros.nodes.image_conversion import image_msg_to_rgb, rgb_to_image_msg


def _frame(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)


@pytest.mark.parametrize('frame_id', ['', 'c', 'cam', 'wrist_camera_optical_frame'])
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8'])
def test_fields_and_pixels_match_rclpy(frame_id, encoding):
    # frame_id lengths shift every later field through the alignment cases
    rgb = _frame()
    if encoding == 'mono8':
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    msg = rgb_to_image_msg(rgb, encoding=encoding, stamp=1234.000000567, frame_id=frame_id)
    raw = read_image(serialize_message(msg))
    assert (raw.header.stamp.sec, raw.header.stamp.nanosec) == (1234, 567)
    assert raw.header.frame_id == frame_id
    assert (raw.height, raw.width, raw.encoding, raw.step, raw.is_bigendian) == \
        (msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)
    assert bytes(raw.data) == bytes(msg.data)
    np.testing.assert_array_equal(image_msg_to_rgb(raw), image_msg_to_rgb(msg))


def test_row_padding_and_16_bit_depth():
    from sensor_msgs.msg import Image

    depth = np.arange(6 * 5, dtype=np.uint16).reshape(6, 5) * 100
    msg = Image(height=6, width=5, encoding='16UC1', is_bigendian=1, step=12)
    rows = np.zeros((6, 12), np.uint8)
    rows[:, :10] = depth.astype('>u2').view(np.uint8).reshape(6, 10)
    msg.data = rows.tobytes()
    raw = read_image(serialize_message(msg))
    assert raw.is_bigendian == 1 and raw.step == 12
    np.testing.assert_array_equal(image_msg_to_rgb(raw), image_msg_to_rgb(msg))


def _big_endian_image(frame_id: bytes, encoding: bytes, pixels: bytes, h: int, w: int):
    def string(text):
        return struct.pack('>I', len(text) + 1) + text + b'\0'

    out = bytearray(b'\x00\x00\x00\x00')  # CDR_BE
    out += struct.pack('>iI', 7, 8) + string(frame_id)
    out += b'\0' * (-(len(out) - 4) % 4) + struct.pack('>II', h, w) + string(encoding)
    out += b'\x00'  # is_bigendian
    out += b'\0' * (-(len(out) - 4) % 4) + struct.pack('>I', w * 3)
    out += struct.pack('>I', len(pixels)) + pixels
    return bytes(out)


def test_big_endian_encapsulation():
    rgb = _frame(2, 3)
    raw = read_image(_big_endian_image(b'ab', b'rgb8', rgb.tobytes(), 2, 3))
    assert (raw.header.stamp.sec, raw.header.stamp.nanosec, raw.header.frame_id) == (7, 8, 'ab')
    np.testing.assert_array_equal(image_msg_to_rgb(raw), rgb)


def test_every_truncation_is_a_clear_error():
    data = serialize_message(rgb_to_image_msg(_frame(2, 3), frame_id='cam'))
    for end in range(len(data)):
        with pytest.raises(ImageConversionError):
            read_image(data[:end])


@pytest.mark.parametrize('data, words', [
    (b'', 'encapsulation header missing'),
    (b'\x00\x07\x00\x00' + b'\0' * 40, 'encapsulation header 00070000'),
])
def test_not_cdr_is_named(data, words):
    with pytest.raises(ImageConversionError, match=words):
        read_image(data)


def test_unterminated_string_is_an_error():
    data = bytearray(serialize_message(rgb_to_image_msg(_frame(2, 3), frame_id='cam')))
    data[4 + 8 + 4 + 3] = ord('x')  # the frame_id's NUL
    with pytest.raises(ImageConversionError, match='Missing string terminator'):
        read_image(bytes(data))
