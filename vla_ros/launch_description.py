"""Build a ``launch`` description from :mod:`vla_ros.bringup` (imported by launch files).

Only a full ROS 2 install has ``launch`` and ``launch_ros``; nothing else in vla_ros
imports this module, so pip-only machines never need them (they use ``vla-ros launch``).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vla_ros import bringup


def generate_for(configuration: str) -> LaunchDescription:
    """A LaunchDescription declaring every argument and starting the bringup nodes."""
    declared = [
        DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                              **({'choices': list(a.choices)} if a.choices else {}))
        for a in bringup.arguments(configuration)
    ]

    def start_nodes(context):
        given = {a.name: LaunchConfiguration(a.name).perform(context)
                 for a in bringup.arguments(configuration)}
        return [
            Node(package='vla_ros', executable=spec.executable, name=spec.name,
                 namespace=given['namespace'],
                 parameters=[*spec.param_files, spec.parameters],
                 remappings=list(spec.remappings), output='screen', emulate_tty=True)
            for spec in bringup.nodes(configuration, given)
        ]

    return LaunchDescription(declared + [OpaqueFunction(function=start_nodes)])
