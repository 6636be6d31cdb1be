"""ros2 launch vla_ros octo_arm.launch.py [name:=value ...] (see vla_ros/bringup.py)."""

from vla_ros.launch_description import generate_for


def generate_launch_description():
    """Describe the octo_arm configuration; nodes and parameters come from vla_ros.bringup."""
    return generate_for('octo_arm')
