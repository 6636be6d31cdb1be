"""ros2 launch vla_ros vla.launch.py robot:=arm policy:=octo [name:=value ...] (bringup.py)."""

from vla_ros.launch_description import generate_for


def generate_launch_description():
    """Describe any robot x policy; nodes and parameters come from vla_ros.bringup."""
    return generate_for('vla')
