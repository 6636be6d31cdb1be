"""The robot backend interface behind the driver node, and a small backend registry.

To run a real arm, subclass :class:`RobotBackend` around your SDK and pass it to the driver
(or register it with :func:`register_backend`). The driver node owns everything ROS: it
limits, times out and interlocks commands, and publishes what :meth:`read_state` returns.
This module must stay free of rclpy so backends can be tested without ROS.
"""

import abc
import importlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

__all__ = ['RobotState', 'RobotBackend', 'make_backend', 'register_backend',
           'available_backends']


@dataclass
class RobotState:
    """One snapshot of the robot, as published by the driver node.

    Poses are in the arm-base frame, the frame in which end-effector twists are commanded.
    ``stamp`` is seconds on the backend's clock (simulated time for simulators, ``time.time()``
    for hardware and the dry run). ``gripper`` is the measured opening, 0 closed .. 1 open.
    ``base_pose`` is ``(x, y, yaw)`` of a mobile base in its odometry frame, else None.
    """

    stamp: float
    joint_names: Tuple[str, ...]
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    ee_position: np.ndarray
    ee_orientation: np.ndarray  # quaternion (w, x, y, z)
    gripper: float
    base_pose: Optional[Tuple[float, float, float]] = None


class RobotBackend(abc.ABC):
    """What the driver node needs from a robot: Cartesian velocity commands and state.

    Implementing a real arm:

    * ``start()`` connects, switches the arm into a Cartesian (or joint) velocity mode and
      returns once commands are accepted; ``stop()`` commands zero velocity and disconnects.
      Both may be called more than once.
    * ``send_command()`` is called at the driver rate with commands that are ALREADY clamped
      to the configured speed limits and workspace; a zero twist means hold the current pose.
      Convert the twist (arm-base frame) to whatever the SDK takes, e.g. integrate it into a
      pose target over ``dt``, or run IK (see ``vla_ros.sim.kinematics``). Do not block for
      much longer than ``dt``. Keep the SDK's own safety limits (collision, torque) on.
    * ``read_state()`` returns the latest measured state; it must be cheap (the driver calls
      it every cycle) and must not raise on transient read errors if a cached value exists.
    * Leave ``is_hardware = True``: the driver then starts with actuation DISABLED until an
      operator enables it. Only simulators and dry runs set it to False.
    * Hardware backends usually have no rendered cameras: keep the default ``cameras()`` ({})
      and run the camera's own ROS driver instead.
    """

    #: Registry / log name of the backend.
    name = 'robot'
    #: True for anything that moves a physical robot (actuation-enable interlock defaults OFF).
    is_hardware = True
    #: True if ``send_command`` honours ``base_twist`` (a mobile base).
    supports_base = False

    @property
    @abc.abstractmethod
    def dof(self) -> int:
        """Number of arm joints (excluding gripper and base)."""

    @property
    @abc.abstractmethod
    def joint_names(self) -> Tuple[str, ...]:
        """Names of all joints reported in :class:`RobotState` (arm, gripper, base)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Connect to the robot and make it ready to accept commands."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop motion and release the robot (idempotent)."""

    @abc.abstractmethod
    def send_command(self, ee_twist: np.ndarray, gripper: float,
                     base_twist: Optional[np.ndarray], dt: float) -> None:
        """Apply one already-limited command for ``dt`` seconds.

        ``ee_twist`` is ``[vx, vy, vz, wx, wy, wz]`` (m/s, rad/s) of the end effector in the
        arm-base frame; ``gripper`` is the target opening 0 (closed) .. 1 (open);
        ``base_twist`` is ``[vx, vy, wz]`` in the base frame, or None (no base command).
        """

    @abc.abstractmethod
    def read_state(self) -> RobotState:
        """Return the latest measured robot state."""

    def cameras(self) -> Dict[str, Tuple[int, int]]:
        """Map camera name -> (width, height) of cameras this backend renders itself."""
        return {}

    def render(self, camera: str) -> np.ndarray:
        """Return an (H, W, 3) uint8 RGB image from ``camera`` (simulators only)."""
        raise NotImplementedError(f'backend {self.name!r} renders no cameras')

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


# name -> 'module:attribute' (imported on first use so e.g. mujoco loads only when needed)
# or a callable returning a backend.
_REGISTRY: Dict[str, object] = {
    'mujoco': 'vla_ros.drivers.mujoco_backend:MujocoBackend',
    'dry_run': 'vla_ros.drivers.dry_run:DryRunBackend',
}


def register_backend(name: str, factory) -> None:
    """Register ``factory`` (a callable, or a ``'module:Class'`` string) under ``name``."""
    _REGISTRY[name] = factory


def available_backends() -> Tuple[str, ...]:
    """Names accepted by :func:`make_backend`."""
    return tuple(sorted(_REGISTRY))


def make_backend(name: str, **params) -> RobotBackend:
    """Create the backend registered as ``name`` (or given as ``'module:Class'``).

    Raises ValueError listing the known names for an unknown one.
    """
    factory = _REGISTRY.get(name)
    if factory is None and ':' in name:
        factory = name  # a user backend given by import path
    if factory is None:
        raise ValueError(
            f'unknown backend {name!r}; known: {", ".join(available_backends())} '
            "(or 'package.module:Class')")
    if isinstance(factory, str):
        module, _, attr = factory.partition(':')
        factory = getattr(importlib.import_module(module), attr)
    backend = factory(**params)
    if not isinstance(backend, RobotBackend):
        raise TypeError(f'backend {name!r} is not a RobotBackend')
    return backend
