"""ros2 launch vla_ros rt1_mobile.launch.py [name:=value ...] (see vla_ros/bringup.py)."""

from vla_ros.launch_description import generate_for


def generate_launch_description():
    """Describe the rt1_mobile configuration; nodes and parameters come from vla_ros.bringup."""
    return generate_for('rt1_mobile')
