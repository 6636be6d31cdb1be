"""Dry-run backend: logs commands and integrates a fake but self-consistent arm state.

Useful to bring up the whole ROS pipeline (policy, driver, limits, bags) without a robot
or a simulator. The joint state is integrated with damped least-squares IK on a numpy chain,
and the end-effector pose is the forward kinematics of those joints, so published joint
states, end-effector pose and commands agree with each other.
"""

import logging
import time

import numpy as np

from vla_ros.drivers.backend import RobotBackend, RobotState, parameters_from_schema
from vla_ros.drivers.joint_rules import command_joint_order
from vla_ros.sim import kinematics as kin

__all__ = ['DryRunBackend']

_GRIPPER_SPEED = 2.0  # opening fraction per second: a full stroke takes 0.5 s


class DryRunBackend(RobotBackend):
    """Pretend robot; ``log`` is a callable taking a string or a ``logging.Logger``.

    With ``dof=7`` the fake arm is the same 7-DoF chain as the MuJoCo scene; other values
    use a generic chain. ``mobile`` adds a fake planar base integrating base twists. At most
    one log line per ``log_period`` seconds summarises the commands received so far.
    """

    name = 'dry_run'
    is_hardware = False
    parameters = parameters_from_schema('dry_run')  # defaults: vla_ros.parameters
    joint_interfaces = ('joint_position', 'joint_velocity')

    @classmethod
    def from_parameters(cls, values, log=None):
        """Build from the driver's parameters, logging through the node's logger."""
        return cls(mobile=values['mobile'], log=log)

    def __init__(self, dof=7, log=None, log_period=1.0, mobile=False, clock=time.time):
        self.supports_base = bool(mobile)
        self.chain = kin.panda_like_chain() if dof == 7 else kin.generic_chain(int(dof))
        if log is None:
            log = logging.getLogger(__name__)
        self._log = log.info if isinstance(log, logging.Logger) else log
        self._log_period = float(log_period)
        self._clock = clock
        self._last_log = -np.inf
        self._count = 0
        self._started = False
        self.command_joints = tuple(self.chain.joint_names)
        self.reset()

    @property
    def dof(self):
        """Number of arm joints."""
        return self.chain.dof

    @property
    def joint_names(self):
        """Arm joint names."""
        return self.chain.joint_names

    def reset(self):
        """Return the fake arm to home, gripper open, base at the origin."""
        self._q = self.chain.home.copy()
        self._dq = np.zeros(self.dof)
        self._gripper = 1.0
        self._base = np.zeros(3)
        self._base_twist = np.zeros(3)

    def start(self):
        """Log that the dry run started."""
        self._started = True
        self._log(f'dry run: started ({self.dof} joints), no robot will move')

    def stop(self):
        """Log the number of commands seen."""
        if self._started:
            self._log(f'dry run: stopped after {self._count} commands')
        self._started = False

    def send_command(self, ee_twist, gripper, base_twist, dt):
        """Integrate the fake state and log (rate-limited) what a robot would have done."""
        twist = np.asarray(ee_twist, float).reshape(6)
        jac = kin.jacobian(self.chain, self._q)
        self._dq = kin.dls_joint_velocities(jac, twist, self._q, self.chain.lower,
                                            self.chain.upper, dt)
        self._q = np.clip(self._q + self._dq * dt, self.chain.lower, self.chain.upper)
        target = float(np.clip(gripper, 0.0, 1.0))
        step = _GRIPPER_SPEED * dt
        self._gripper += float(np.clip(target - self._gripper, -step, step))
        if base_twist is not None and self.supports_base:
            vx, vy, wz = np.asarray(base_twist, float).reshape(3)
            c, s = np.cos(self._base[2]), np.sin(self._base[2])
            self._base += dt * np.array([c * vx - s * vy, s * vx + c * vy, wz])
            self._base_twist = np.array([vx, vy, wz])
        self._count += 1
        now = self._clock()
        if now - self._last_log >= self._log_period:
            self._last_log = now
            base = '' if base_twist is None else f' base={np.round(base_twist, 3).tolist()}'
            self._log(f'dry run: {self._count} commands so far; last twist='
                      f'{np.round(twist, 3).tolist()} gripper={target:.2f}{base} dt={dt:.3f}')

    def attach_node(self, node):
        """Take the driver's ``joint_names`` (joint interfaces) as the commanded joints."""
        if node.has_parameter('command_interface') and \
                node.get_parameter('command_interface').value != 'ee_twist':
            self.set_command_joints(node.get_parameter('joint_names').value)

    def set_command_joints(self, names):
        """Set which joints (and in which order) ``send_joint_command`` receives."""
        self.command_joints = command_joint_order(names, tuple(self.chain.joint_names),
                                                  self.name)

    def send_joint_command(self, positions, velocities, gripper, dt):
        """Integrate joint targets (the fake arm follows them at once) or velocities.

        Arrays are in :attr:`command_joints` order; other joints keep their position.
        Both None (interlock off): the arm stays where it is.
        """
        index = [list(self.chain.joint_names).index(n) for n in self.command_joints]
        q = self._q.copy()
        if positions is not None:
            q[index] = np.asarray(positions, float).reshape(len(index))
        elif velocities is not None:
            q[index] += np.asarray(velocities, float).reshape(len(index)) * dt
        q = np.clip(q, self.chain.lower, self.chain.upper)
        self._dq = (q - self._q) / dt if dt > 0 else np.zeros(self.dof)
        self._q = q
        self._step_gripper(gripper, dt)
        self._count += 1
        now = self._clock()
        if now - self._last_log >= self._log_period:
            self._last_log = now
            kind = 'positions' if positions is not None else 'velocities'
            values = positions if positions is not None else velocities
            shown = ('none (interlock off)' if values is None
                     else np.round(np.asarray(values, float), 3).tolist())
            self._log(f'dry run: {self._count} commands so far; last joint {kind}={shown} '
                      f'gripper={float(gripper):.2f} dt={dt:.3f}')

    def _step_gripper(self, gripper, dt):
        target = float(np.clip(gripper, 0.0, 1.0))
        step = _GRIPPER_SPEED * dt
        self._gripper += float(np.clip(target - self._gripper, -step, step))

    def read_state(self):
        """Return the integrated fake state (stamp = ``clock()``)."""
        pos, rot, _, _ = kin.forward(self.chain, self._q)
        return RobotState(
            stamp=float(self._clock()), joint_names=self.joint_names,
            joint_positions=self._q.copy(), joint_velocities=self._dq.copy(),
            ee_position=pos, ee_orientation=kin.rotation_to_quat(rot),
            gripper=self._gripper,
            base_pose=tuple(float(v) for v in self._base) if self.supports_base else None,
            base_twist=(tuple(float(v) for v in self._base_twist) if self.supports_base
                        else None))
