"""Test fixtures: every ROS graph a test makes stays on this machine, in its own domain.

Each pytest-xdist worker gets its own ROS_DOMAIN_ID (the Makefile's random base plus the
worker index), and discovery is limited to localhost, so parallel workers, other
developers' runs and the network never see each other's traffic.
"""

import os
import sys

import pytest

_BASE_DOMAIN = int(os.environ.get('ROS_DOMAIN_ID', '150'))
_WORKER = os.environ.get('PYTEST_XDIST_WORKER', 'gw0')
_WORKER_INDEX = int(_WORKER[2:]) if _WORKER.startswith('gw') else 0
# Fast DDS accepts domain ids 0..232; keep clear of 0 (the default everyone uses).
DOMAIN_ID = 1 + (_BASE_DOMAIN + 7 * _WORKER_INDEX) % 230

os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
if os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE') not in ('LOCALHOST', 'OFF'):
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
# Shared memory big enough for large images, UDP restricted to loopback (see the XML).
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(
    __import__('pathlib').Path(__file__).resolve().parents[1] / 'config' / 'dds'
    / 'fastdds_large_images.xml'))
# Tiny models on a shared 2-core machine: a second intra-op thread only adds contention
# (10-50x slower measured); torch reads this when it is first imported.
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['TRANSFORMERS_OFFLINE'] = '1'
os.environ.setdefault('MUJOCO_GL', 'egl')


@pytest.fixture
def ros_env():
    """Environment for child processes: same venv, same isolated domain."""
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
    env['PYTHONUNBUFFERED'] = '1'
    return env


@pytest.fixture
def python_exe():
    """Interpreter of this venv, for child processes (see ENVIRONMENT: bootstrapper)."""
    return sys.executable


@pytest.fixture
def ros_context():
    """An initialised rclpy context on this worker's domain, shut down afterwards."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture(scope='module')
def module_ros_context():
    """Like ros_context, but shared by a module's tests (graph harnesses are slow to build)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)
