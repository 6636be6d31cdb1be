"""Worked example of a robot backend plugin (README, "Extending: robot backends").

A real backend wraps an arm SDK; this one integrates the commands into a point "arm" and
records them, so the tests can see exactly what the driver sent. It is the whole plugin:
a class with ``parameters``; registering it is one entry point in the user's package::

    [project.entry-points.'vla_ros.backends']
    my_arm = example_arm_backend:ExampleArmBackend

after which ``backend:=my_arm my_arm.port:=30002`` works in any launch of the driver.
"""

import numpy as np

from vla_ros.drivers.backend import BackendParameter, RobotBackend, RobotState


class ExampleArmBackend(RobotBackend):
    """A pretend networked arm: three prismatic joints moving the end effector directly."""

    name = 'my_arm'
    # is_hardware stays True (the default): the driver starts with actuation disabled.
    parameters = (
        BackendParameter('my_arm.host', '192.168.1.10', 'Arm controller address.'),
        BackendParameter('my_arm.port', 30002, 'Arm controller port.',
                         minimum=1, maximum=65535),
        BackendParameter('my_arm.max_joint_speed', 1.0,
                         'Speed limit the SDK enforces itself [m/s].',
                         minimum=0.01, maximum=3.0),
    )

    def __init__(self, host, port, max_joint_speed):
        self.host, self.port, self.max_joint_speed = host, port, max_joint_speed
        self.connected = False
        self.sent = []  # (twist, gripper, dt) as the driver sent them
        self._position = np.array([0.5, 0.0, 0.3])
        self._gripper = 1.0

    @property
    def dof(self):
        """Three prismatic joints."""
        return 3

    @property
    def joint_names(self):
        """Joint names as published on joint_states."""
        return ('slide_x', 'slide_y', 'slide_z')

    def start(self):
        """Connect (pretend)."""
        self.connected = True

    def stop(self):
        """Disconnect (pretend)."""
        self.connected = False

    def send_command(self, ee_twist, gripper, base_twist, dt):
        """Move the point arm by the (already limited) twist."""
        twist = np.asarray(ee_twist, float)
        self.sent.append((twist.copy(), float(gripper), float(dt)))
        self._position = self._position + twist[:3] * dt
        self._gripper = float(gripper)

    def read_state(self):
        """The integrated position as joint positions and end-effector pose."""
        return RobotState(
            stamp=0.0, joint_names=self.joint_names,
            joint_positions=self._position.copy(), joint_velocities=np.zeros(3),
            ee_position=self._position.copy(), ee_orientation=np.array([1.0, 0, 0, 0]),
            gripper=self._gripper)
