"""Robot backends as plugins: registry, entry points, their own parameters, the driver.

The worked example is ``test/example_arm_backend.py``: one file, registered by one entry
point, and the driver node runs it with its own parameters (``backend:=my_arm``).
"""

import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool
from test_driver_node import graph, moving_x, wait_for  # noqa: F401 - graph is a fixture

from vla_ros.drivers import backend as backends
from vla_ros.drivers.backend import (
    BackendParameter,
    available_backends,
    backend_parameters,
    create_backend,
    resolve_backend,
)
from vla_ros.drivers.dry_run import DryRunBackend

EXAMPLE = 'example_arm_backend:ExampleArmBackend'


def install_plugin(root, entry_points):
    """Make ``root`` look like an installed distribution declaring ``entry_points``."""
    info = root / 'my_arm_example-0.1.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: my-arm-example\nVersion: 0.1\n')
    lines = '\n'.join(f'{name} = {target}' for name, target in entry_points.items())
    (info / 'entry_points.txt').write_text(f'[vla_ros.backends]\n{lines}\n')


@pytest.fixture
def my_arm_installed(tmp_path, monkeypatch):
    install_plugin(tmp_path, {'my_arm': EXAMPLE, 'broken_arm': 'no_such_module_xyz:Arm'})
    monkeypatch.syspath_prepend(str(tmp_path))
    return 'my_arm'


def test_installed_plugin_is_found_by_name_and_built_from_its_parameters(my_arm_installed):
    assert {'my_arm', 'mujoco', 'dry_run'} <= set(available_backends())
    cls = resolve_backend('my_arm')
    assert [p.name for p in backend_parameters(cls)] == [
        'my_arm.host', 'my_arm.port', 'my_arm.max_joint_speed']
    arm = create_backend('my_arm', {'my_arm.port': 1234})
    assert (arm.host, arm.port, arm.max_joint_speed) == ('192.168.1.10', 1234, 1.0)
    assert arm.is_hardware


def test_backend_parameters_are_checked(my_arm_installed):
    with pytest.raises(ValueError, match=r'my_arm.port must be in \[1, 65535\]'):
        create_backend('my_arm', {'my_arm.port': 0})
    with pytest.raises(ValueError, match='takes no parameters'):
        create_backend('my_arm', {'seed': 3})
    with pytest.raises(ValueError, match='not a valid ROS name'):
        BackendParameter('bad name', 1, 'x')
    with pytest.raises(ValueError, match='list default'):
        BackendParameter('joints', [], 'x')


def test_unknown_backend_lists_the_known_ones_and_broken_plugins_are_named(my_arm_installed):
    with pytest.raises(ValueError) as err:
        resolve_backend('ur5_magic')
    message = str(err.value)
    for name in ('my_arm', 'mujoco', 'dry_run', 'package.module:Class', 'vla_ros.backends'):
        assert name in message
    with pytest.raises(ValueError, match="cannot load backend 'broken_arm'.*no_such_module_xyz"):
        resolve_backend('broken_arm')
    with pytest.raises(ValueError, match="cannot load backend 'vla_ros.nope:Arm'"):
        resolve_backend('vla_ros.nope:Arm')


def test_module_path_backend_gets_its_parameters():
    arm = create_backend(EXAMPLE, {'my_arm.host': 'arm.local'})
    assert arm.host == 'arm.local' and arm.port == 30002


def test_builtin_backends_declare_their_own_parameters():
    mujoco = {p.name for p in backend_parameters(resolve_backend('mujoco'))}
    assert mujoco == {'mobile', 'seed', 'image_width', 'image_height', 'task', 'task_seed',
                      'task_split'}
    assert {p.name for p in backend_parameters(DryRunBackend)} == {'mobile'}
    # Backends that talk to the robot's own controllers prefix theirs with their name.
    for name in ('ros2_control', 'moveit_servo'):
        declared = [p.name for p in backend_parameters(resolve_backend(name))]
        assert declared and all(n.startswith(f'{name}.') for n in declared), declared
    dry = create_backend('dry_run', {'mobile': True}, log=lambda line: None)
    assert dry.supports_base


# ------------------------------------------------------------------ through the driver node

@pytest.mark.graph
def test_driver_declares_only_the_chosen_backends_parameters(ros_context):
    from vla_ros.nodes.driver_node import DriverNode

    node = DriverNode(context=ros_context, parameter_overrides=[
        Parameter('backend', value='dry_run'), Parameter('mobile', value=True)])
    try:
        assert node.get_parameter('mobile').value is True and node.backend.supports_base
        for mujoco_only in ('seed', 'task', 'task_seed', 'task_split', 'image_width'):
            assert not node.has_parameter(mujoco_only), mujoco_only
        result = node.set_parameters([Parameter('mobile', value=False)])[0]
        assert not result.successful and 'read-only' in result.reason
    finally:
        node.destroy_node()


@pytest.mark.graph
def test_backend_parameter_colliding_with_the_driver_is_refused(ros_context, monkeypatch):
    from vla_ros.nodes.driver_node import DriverNode

    class Clashing(DryRunBackend):
        parameters = (BackendParameter('rate_hz', 5.0, 'clashes'),)

    monkeypatch.setitem(backends._REGISTRY, 'clashing', Clashing)
    with pytest.raises(ValueError, match="'rate_hz' collides with a driver parameter"):
        DriverNode(context=ros_context, parameter_overrides=[
            Parameter('backend', value='clashing')])


@pytest.mark.graph
def test_driver_runs_a_registered_plugin_with_its_parameters(graph, my_arm_installed):  # noqa: F811

    driver = graph.driver(backend='my_arm', **{'my_arm.port': 1234, 'max_linear_velocity': 0.1})
    arm = driver.backend
    assert type(arm).__name__ == 'ExampleArmBackend' and arm.connected
    assert driver.get_parameter('my_arm.port').value == 1234
    assert driver.get_parameter('my_arm.host').value == '192.168.1.10'
    assert not driver.has_parameter('seed')
    # Hardware: nothing moves until someone enables actuation.
    assert not driver.actuation_enabled
    client = graph.client
    client.command = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    time.sleep(0.3)
    assert all(not twist.any() for twist, _, _ in arm.sent)
    assert client.call(SetBool, '/vla_driver/enable', SetBool.Request(data=True)).success
    # The driver's limits hold for the plugin: 0.5 m/s requested, 0.1 m/s sent.
    assert moving_x(client, 0.1)
    assert wait_for(lambda: any(np.isclose(t[0], 0.1) for t, _, _ in list(arm.sent)))
    assert max(float(np.linalg.norm(t[:3])) for t, _, _ in list(arm.sent)) <= 0.1 + 1e-9
    client.command = None


@pytest.mark.graph
def test_a_backend_that_fails_to_build_fails_the_node_with_its_error(ros_context):
    from vla_ros.nodes.driver_node import DriverNode

    with pytest.raises(Exception, match='nosuch'):
        DriverNode(context=ros_context, parameter_overrides=[
            Parameter('backend', value='mujoco'), Parameter('task', value='nosuch'),
            Parameter('image_width', value=32), Parameter('image_height', value=32)])


@pytest.mark.graph
def test_driver_process_names_an_unknown_backend_and_runs_an_installed_one(
        ros_env, python_exe, tmp_path):
    import os
    import pathlib
    import signal
    import subprocess

    command = [python_exe, '-m', 'vla_ros.nodes.driver_node', '--ros-args',
               '-p', 'backend:=my_arm', '-p', 'my_arm.port:=1234', '-p', 'rate_hz:=10.0']
    missing = subprocess.run(command, env=ros_env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2, missing.stderr
    assert ("unknown backend 'my_arm'; known: dry_run, moveit_servo, mujoco, ros2_control"
            in missing.stderr)
    assert 'Traceback' not in missing.stderr

    install_plugin(tmp_path, {'my_arm': EXAMPLE})
    env = dict(ros_env)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(tmp_path), str(pathlib.Path(__file__).parent), env.get('PYTHONPATH', '')])
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30.0
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "active: driving 'my_arm'" in line or not line:
                break
        assert any("active: driving 'my_arm'" in line for line in lines), lines
        assert any('actuation DISABLED' in line for line in lines), lines  # hardware
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
