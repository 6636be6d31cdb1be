"""ROS package checks: manifest, entry points, lint, and the network-isolation settings."""

import importlib.metadata
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('manifest', ['package.xml', 'msg/package.xml'])
def test_package_xml_is_valid_format3(manifest):
    from catkin_pkg.package import parse_package

    ET.parse(ROOT / manifest)  # well-formed XML
    package = parse_package(ROOT / manifest)
    package.validate()
    assert package.package_format == 3


def test_package_xml_declares_runtime_dependencies():
    from catkin_pkg.package import parse_package

    package = parse_package(ROOT / 'package.xml')
    names = {d.name for d in package.exec_depends + package.build_depends}
    for dep in ('rclpy', 'sensor_msgs', 'geometry_msgs', 'std_msgs', 'std_srvs',
                'diagnostic_msgs', 'vla_ros_msgs', 'python3-numpy', 'python3-torch'):
        assert dep in names, dep
    assert package.get_build_type() == 'ament_python'
    msgs = parse_package(ROOT / 'msg/package.xml')
    assert 'rosidl_default_generators' in {d.name for d in msgs.buildtool_depends}
    assert msgs.get_build_type() == 'ament_cmake'


def test_ament_resource_marker_and_data_files():
    assert (ROOT / 'resource' / 'vla_ros').is_file()
    setup_py = (ROOT / 'setup.py').read_text()
    for fragment in ('resource_index/packages', "glob('launch/*.launch.py')",
                     "glob('config/robots/*.yaml')"):
        assert fragment in setup_py


def test_console_scripts_are_importable():
    scripts = [ep for ep in importlib.metadata.entry_points(group='console_scripts')
               if ep.value.startswith('vla_ros.')]
    assert {ep.name for ep in scripts} >= {'vla-ros', 'inference_node', 'driver_node'}
    for ep in scripts:
        assert callable(ep.load()), ep


def test_custom_messages_import():
    from vla_ros_msgs.msg import ActionChunk, GripperCommand, PolicyStatus

    fields = ActionChunk.get_fields_and_field_types()
    assert fields['actions'] == 'sequence<float>'
    assert fields['dimension_names'] == 'sequence<string>'
    assert fields['control_period'] == 'builtin_interfaces/Duration'
    assert 'observation_age' in PolicyStatus.get_fields_and_field_types()
    assert GripperCommand.get_fields_and_field_types()['position'] == 'double'


def test_ruff_lint_with_pep257_docstrings():
    result = subprocess.run(
        [sys.executable, '-m', 'ruff', 'check', 'vla_ros', 'test', 'launch', 'benchmarks'],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ros_entry_point_is_isolated():
    makefile = (ROOT / 'Makefile').read_text()
    assert 'export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST' in makefile
    assert 'export ROS_DOMAIN_ID' in makefile
    assert 'ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST' in (ROOT / '.ci' / 'run').read_text()
    import os
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] in ('LOCALHOST', 'OFF')
