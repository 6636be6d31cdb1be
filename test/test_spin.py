"""spin_node: a Ctrl-C that surfaces as a RuntimeError is a clean stop; other errors are not."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.graph]

# A node whose timer callback fails the way rclpy's take does when Ctrl-C lands while a
# message is converted to Python: the KeyboardInterrupt is swallowed into pybind11's
# RuntimeError. With interrupt=False the same RuntimeError comes with no signal behind it.
_SCRIPT = textwrap.dedent('''
    import signal, sys
    from rclpy.node import Node
    from vla_ros.nodes.spin import spin_node

    INTERRUPT = sys.argv[1] == 'interrupt'

    class Failing(Node):
        def __init__(self):
            super().__init__('spin_probe')
            self.create_timer(0.05, self.tick)

        def tick(self):
            try:
                if INTERRUPT:
                    signal.raise_signal(signal.SIGINT)
                    for _ in range(1000):
                        pass
            except KeyboardInterrupt:
                pass
            raise RuntimeError("Unable to convert call argument '0' to Python object")

    spin_node(Failing)
    print('clean exit')
''')


def _run(mode, ros_env):
    env = dict(ros_env, ROS_AUTOMATIC_DISCOVERY_RANGE='OFF')
    return subprocess.run([sys.executable, '-c', _SCRIPT, mode], env=env, capture_output=True,
                          text=True, timeout=60)


def test_ctrl_c_during_a_take_is_a_clean_stop(ros_env):
    result = _run('interrupt', ros_env)
    assert result.returncode == 0, result.stderr
    assert 'clean exit' in result.stdout


def test_runtime_error_without_ctrl_c_still_fails_the_node(ros_env):
    result = _run('plain', ros_env)
    assert result.returncode == 1
    assert 'Unable to convert call argument' in result.stderr
