"""The large-image Fast DDS profile, applied by default and never over the user's choice.

Fast DDS's default 512 KB shared-memory segment is too small for a 640x480 rgb8 frame,
which then travels as UDP fragments and, with best-effort sensor QoS, is mostly lost
(README: 7 of 144 frames arrived). ``config/dds/fastdds_large_images.xml`` fixes that for
a single-machine graph. ``vla-ros launch`` and the node executables set it when
``FASTDDS_DEFAULT_PROFILES_FILE`` is unset. A value the user set (even empty) wins, and
so does ``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`` / ``SYSTEM_DEFAULT``: the profile
restricts UDP to the loopback interface, which would contradict a request for the network.
"""

import os
from collections.abc import MutableMapping

from vla_ros.paths import config_dir

PROFILE_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
_NETWORK_RANGES = ('SUBNET', 'SYSTEM_DEFAULT')


def default_profile() -> str:
    """Path of the shipped large-image profile."""
    return str(config_dir('dds', 'fastdds_large_images.xml'))


def profile_to_set(env) -> str:
    """The profile ``env`` should get ('' when the user's setting stands)."""
    if PROFILE_VARIABLE in env:
        return ''
    if env.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '').upper() in _NETWORK_RANGES:
        return ''
    path = default_profile()
    return path if os.path.isfile(path) else ''


def apply_default_profile(env: MutableMapping | None = None) -> str:
    """Set the profile in ``env`` (default ``os.environ``) if the user has none; the path."""
    env = os.environ if env is None else env
    path = profile_to_set(env)
    if path:
        env[PROFILE_VARIABLE] = path
    return path
