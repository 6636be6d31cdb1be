"""Robot backend running the MuJoCo arm scene (``vla_ros.sim.scene.ArmSim``)."""

import numpy as np

from vla_ros.drivers.backend import RobotBackend, RobotState, parameters_from_schema
from vla_ros.drivers.joint_rules import command_joint_order
from vla_ros.sim.scene import ArmSim

__all__ = ['MujocoBackend']


class MujocoBackend(RobotBackend):
    """Simulated arm: every ``send_command`` advances the physics by ``dt``.

    Simulated time therefore follows the driver's command clock, and the rendered cameras
    show the state after the latest command.
    """

    name = 'mujoco'
    is_hardware = False
    # Flat names (not 'mujoco.seed'): launch files, robot configs and recorded sessions
    # have always set them so.
    parameters = parameters_from_schema('mujoco')  # defaults: vla_ros.parameters
    joint_interfaces = ('joint_position', 'joint_velocity')

    @classmethod
    def from_parameters(cls, values, log=None):
        """Build from the driver's parameters (width and height make ``image_size``)."""
        return cls(mobile=values['mobile'], seed=values['seed'],
                   image_size=(values['image_width'], values['image_height']),
                   task=values['task'], task_seed=values['task_seed'],
                   task_split=values['task_split'])

    def __init__(self, mobile=False, image_size=(224, 224), seed=None,
                 cameras=('front', 'wrist'), task='', task_seed=0, task_split='test'):
        """Optionally lay the scene out as an episode of a sim task (for demos and tests).

        With ``task`` ('reach', 'push', 'pick_up') the objects are placed as episode
        ``task_seed`` of ``task_split`` and :meth:`task_status` judges the episode with
        privileged state, like a simulator's ground truth.
        """
        self.sim = ArmSim(mobile=mobile, image_size=image_size, seed=seed, cameras=cameras)
        self.command_joints = ArmSim.ARM_JOINTS  # order of send_joint_command's arrays
        self.supports_base = self.sim.mobile
        self.task_instance = None
        if task:
            from vla_ros.sim.tasks import get_task

            self.task_instance = get_task(task).sample(int(task_seed), task_split)
            self.task_instance.reset(self.sim)

    @property
    def dof(self):
        """Number of arm joints (7)."""
        return len(ArmSim.ARM_JOINTS)

    @property
    def joint_names(self):
        """Base (mobile only), arm and finger joint names."""
        return self.sim.joint_names

    def start(self):
        """Nothing to connect to; the scene was reset at construction."""

    def stop(self):
        """Release the renderers' GL contexts (rendering later recreates them)."""
        self.sim.close()

    def reset(self, seed=None):
        """Start a new episode: home the arm and re-scatter the objects (or the task)."""
        if self.task_instance is not None:
            self.task_instance.reset(self.sim)
        else:
            self.sim.reset(seed)

    def task_status(self):
        """The task episode's instruction and outcome so far (None without a task)."""
        if self.task_instance is None:
            return None
        outcome = self.task_instance.evaluate(self.sim)
        info = self.task_instance.info()
        return {'task': info.get('task'), 'instruction': self.task_instance.instruction,
                'target': self.task_instance.target, 'seed': self.task_instance.seed,
                'success': outcome.success, 'wrong_object': outcome.wrong_object,
                'sim_time': round(self.sim.time, 3)}

    def task_instruction(self):
        """The task episode's instruction (None without a task)."""
        return None if self.task_instance is None else self.task_instance.instruction

    def send_command(self, ee_twist, gripper, base_twist, dt):
        """Step the simulation for ``dt`` seconds under the command."""
        if base_twist is not None and not self.supports_base:
            base_twist = None  # the driver may send zeros for a base it does not know about
        self.sim.step_ee_twist(np.asarray(ee_twist, float), float(gripper), base_twist, dt)

    def attach_node(self, node):
        """Take the driver's ``joint_names`` (joint interfaces) as the commanded joints."""
        if node.has_parameter('command_interface') and \
                node.get_parameter('command_interface').value != 'ee_twist':
            self.set_command_joints(node.get_parameter('joint_names').value)

    def set_command_joints(self, names):
        """Set which arm joints (and in which order) ``send_joint_command`` receives."""
        self.command_joints = command_joint_order(names, ArmSim.ARM_JOINTS, self.name)

    def send_joint_command(self, positions, velocities, gripper, dt):
        """Step the simulation for ``dt`` seconds toward joint targets or with velocities.

        Arrays are in :attr:`command_joints` order; arm joints not in it hold their target.
        Both None (interlock off): the arm keeps its current targets.
        """
        index = [ArmSim.ARM_JOINTS.index(n) for n in self.command_joints]
        if positions is None and velocities is None:
            self.sim.step_joint_targets(self.sim.arm_target, float(gripper), dt)
        elif positions is not None:
            target = self.sim.arm_target
            target[index] = np.asarray(positions, float).reshape(len(index))
            self.sim.step_joint_targets(target, float(gripper), dt)
        else:
            dq = np.zeros(len(ArmSim.ARM_JOINTS))
            dq[index] = np.asarray(velocities, float).reshape(len(index))
            self.sim.step_joint_velocities(dq, float(gripper), dt)

    def read_state(self):
        """Return the simulated state (stamp = simulated seconds)."""
        pos, quat = self.sim.ee_pose()
        return RobotState(
            stamp=self.sim.time, joint_names=self.sim.joint_names,
            joint_positions=self.sim.joint_positions(),
            joint_velocities=self.sim.joint_velocities(), ee_position=pos,
            ee_orientation=quat, gripper=self.sim.gripper_opening(),
            base_pose=self.sim.base_pose(), base_twist=self.sim.base_velocity())

    def cameras(self):
        """All scene cameras at the configured image size."""
        return {name: self.sim.image_size for name in self.sim.cameras}

    def render(self, camera):
        """Render ``camera`` as (H, W, 3) uint8 RGB."""
        if camera not in self.sim.cameras:
            raise ValueError(f'unknown camera {camera!r}; have {self.sim.cameras}')
        return self.sim.render(camera)

