"""The large-image Fast DDS profile, applied by default and never over the user's choice.

Fast DDS's default 512 KB shared-memory segment is too small for a 640x480 rgb8 frame,
which then travels as UDP fragments and, with best-effort sensor QoS, is mostly lost
(README: 7 of 144 frames arrived). ``config/dds/fastdds_large_images.xml`` fixes that for
a single-machine graph. ``vla-ros launch`` and the node executables set it when
``FASTDDS_DEFAULT_PROFILES_FILE`` is unset. A value the user set (even empty) wins, and
so does ``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`` / ``SYSTEM_DEFAULT``: the profile
restricts UDP to the loopback interface, which would contradict a request for the network.

Where the process may use real-time scheduling (root, CAP_SYS_NICE or an rtprio limit),
the variant ``fastdds_large_images_rt.xml`` is chosen: the same, with Fast DDS's reception
threads at SCHED_FIFO 5, so a command reaches a subscriber on time however busy the CPU
is (measured in the README's pipeline benchmark). Without the privilege Fast DDS would
log an error for each such thread, so the plain profile is used.
"""

import functools
import os
import threading
from collections.abc import MutableMapping

from vla_ros.paths import config_dir

PROFILE_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
_NETWORK_RANGES = ('SUBNET', 'SYSTEM_DEFAULT')
# Discovery is not symmetric in time: a process that joins learns of most participants at
# once, but a busy one (a recorder, the driver) may learn of the newcomer, or the newcomer
# of it, only from the next periodic announcement, 3 s apart in Fast DDS (measured here:
# up to 2.0 s in 24 starts). A publisher matched on its own side may thus go unheard for
# that long. Whoever must be heard by a participant it cannot check (``instruct``'s
# latched instruction, the control process taking over the commands) waits this long.
DISCOVERY_SETTLE_S = 3.5


def default_profile(realtime: bool | None = None) -> str:
    """Path of the shipped large-image profile (``realtime`` None: if permitted here)."""
    if realtime is None:
        realtime = realtime_permitted()
    name = 'fastdds_large_images_rt.xml' if realtime else 'fastdds_large_images.xml'
    return str(config_dir('dds', name))


@functools.lru_cache(maxsize=1)
def realtime_permitted() -> bool:
    """Whether a thread of this process may switch itself to SCHED_FIFO (tried, then undone)."""
    if not hasattr(os, 'sched_setscheduler'):
        return False
    result = []

    def probe():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError:
            result.append(False)
            return
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        result.append(True)

    thread = threading.Thread(target=probe, name='rt-probe')  # never the caller's thread
    thread.start()
    thread.join()
    return bool(result and result[0])


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
