"""Build a ``launch`` description from :mod:`vla_ros.bringup` (imported by launch files).

Only a full ROS 2 install has ``launch`` and ``launch_ros``; nothing else in vla_ros
imports this module, so pip-only machines never need them (they use ``vla-ros launch``).
Everything that decides something (argument conversion and validation, parameter order,
the DDS profile) is a pure function in bringup / vla_ros.dds, tested without launch.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vla_ros import bringup
from vla_ros.dds import PROFILE_VARIABLE, profile_to_set


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
        # Raises bringup.LaunchError listing every bad value before any node starts.
        specs = bringup.nodes(configuration, given)
        actions = []
        # launch >= Iron keeps a scoped environment on the context; older ones use os.environ.
        profile = profile_to_set(getattr(context, 'environment', os.environ))
        if profile:
            actions.append(SetEnvironmentVariable(PROFILE_VARIABLE, profile))
        actions += [
            Node(package='vla_ros', executable=spec.executable, name=spec.name,
                 namespace=given['namespace'],
                 parameters=bringup.launch_parameters(spec),
                 remappings=list(spec.remappings), output='screen', emulate_tty=True)
            for spec in specs
        ]
        return actions

    return LaunchDescription(declared + [OpaqueFunction(function=start_nodes)])
