"""Named QoS profiles shared by every vla_ros node, so publishers and subscribers agree."""

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# Cameras and joint states: best effort, shallow; a late frame is worth less than a new one.
SENSOR = qos_profile_sensor_data

# Commands: reliable and volatile. Depth 5 rather than 1 so a brief executor stall at
# 30-50 Hz does not drop commands; subscribers only act on the newest one anyway.
COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Instruction: a late joiner (e.g. a restarted inference node) gets the current task.
INSTRUCTION = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# Latched state such as the e-stop: a driver that starts after the button was pressed
# must still see it. Same settings as the instruction; a separate name for its intent.
LATCHED = INSTRUCTION

# Status and chunks: reliable, and deep enough that monitors and bags see every update.
# A reliable KEEP_LAST writer overwrites samples not yet acknowledged once its history is
# full: depth 5 of the driver's 50 Hz ~/applied_twist lost 8 messages in a soak recording
# when the recorder was starved on a loaded CPU; 50 covers a one-second stall.
STATUS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=50,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
