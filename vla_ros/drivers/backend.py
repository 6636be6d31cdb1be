"""The robot backend interface behind the driver node, and the backend plugin registry.

To run a real arm, subclass :class:`RobotBackend` around your SDK, list its constructor
arguments in ``parameters`` (the driver node declares them as ROS parameters and passes
their values to :meth:`RobotBackend.from_parameters`), and make it findable by name:

* an entry point in the group ``vla_ros.backends`` of your package
  (``my_arm = my_pkg.arm:MyArm``), then ``backend:=my_arm``;
* or :func:`register_backend` in code that runs before the driver node is built;
* or no registration at all: ``backend:=my_pkg.arm:MyArm``.

The driver node owns everything ROS: it limits, times out and interlocks commands
(:mod:`vla_ros.drivers.core`), and publishes what :meth:`RobotBackend.read_state` returns.
This module must stay free of rclpy so backends can be tested without ROS.
"""

import abc
import importlib
import importlib.metadata
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = ['RobotState', 'RobotBackend', 'BackendParameter', 'BackendError', 'make_backend',
           'register_backend', 'available_backends', 'resolve_backend',
           'backend_parameters', 'create_backend', 'ENTRY_POINT_GROUP']

#: Entry-point group in which installed packages register robot backends by name.
ENTRY_POINT_GROUP = 'vla_ros.backends'


class BackendError(ValueError):
    """A backend that cannot be found, loaded or given its parameters (message says why)."""


@dataclass
class RobotState:
    """One snapshot of the robot, as published by the driver node.

    Poses are in the arm-base frame, the frame in which end-effector twists are commanded.
    ``stamp`` is seconds on the backend's clock (simulated time for simulators, ``time.time()``
    for hardware and the dry run). ``gripper`` is the measured opening, 0 closed .. 1 open.
    ``base_pose`` is ``(x, y, yaw)`` of a mobile base in its odometry frame, else None;
    ``base_twist`` its measured ``(vx, vy, wz)`` in the base's own frame (None if unknown).
    """

    stamp: float
    joint_names: Tuple[str, ...]
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    ee_position: np.ndarray
    ee_orientation: np.ndarray  # quaternion (w, x, y, z)
    gripper: float
    base_pose: Optional[Tuple[float, float, float]] = None
    base_twist: Optional[Tuple[float, float, float]] = None


ParameterValue = Union[bool, int, float, str, list]


@dataclass(frozen=True)
class BackendParameter:
    """One constructor argument of a backend, declared by the driver node as a parameter.

    ``name`` is the ROS parameter name (prefix a plugin's names with the backend's name,
    e.g. ``my_arm.host``, so they cannot collide with the driver's own); ``argument`` the
    keyword passed to the backend (default: the last dotted part of ``name``). The type
    is the type of ``default`` (lists must be non-empty). ``minimum`` / ``maximum`` bound
    numbers. All backend parameters are read-only: the backend is built once.
    """

    name: str
    default: ParameterValue
    description: str
    argument: str = ''
    minimum: Optional[float] = None
    maximum: Optional[float] = None

    def __post_init__(self):
        if not self.name or not all(part.isidentifier() for part in self.name.split('.')):
            raise ValueError(f'backend parameter name {self.name!r} is not a valid ROS name')
        if isinstance(self.default, list) and not self.default:
            raise ValueError(f'backend parameter {self.name!r}: a list default must not be '
                             'empty (its element type could not be declared)')
        if not isinstance(self.default, (bool, int, float, str, list)):
            raise TypeError(f'backend parameter {self.name!r}: unsupported default '
                            f'{self.default!r}')
        if not self.argument:
            object.__setattr__(self, 'argument', self.name.rsplit('.', 1)[-1])

    def check(self, value):
        """Return ``value`` if it is within the declared bounds, else raise BackendError."""
        if self.minimum is not None or self.maximum is not None:
            low = -math.inf if self.minimum is None else self.minimum
            high = math.inf if self.maximum is None else self.maximum
            if not (low <= value <= high):
                raise BackendError(f'{self.name} must be in [{low}, {high}], got {value!r}')
        return value


def parameters_from_schema(backend: str) -> Tuple[BackendParameter, ...]:
    """The ``BackendParameter`` s of a built-in backend, from :data:`vla_ros.parameters.BACKENDS`.

    The schema holds their defaults, ranges and meanings once; launch validation, help
    texts and the driver's declarations all read them from there.
    """
    from vla_ros import parameters as schema

    out = []
    for spec in schema.BACKENDS[backend].values():
        low, high = spec.range if spec.range is not None else (None, None)
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        out.append(BackendParameter(spec.name, default, spec.description,
                                    minimum=low, maximum=high))
    return tuple(out)


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
    * Constructor arguments the user should be able to set go into ``parameters``
      (:class:`BackendParameter`); the driver declares them as read-only node parameters
      and calls :meth:`from_parameters` with their values.
    """

    #: Registry / log name of the backend.
    name = 'robot'
    #: True for anything that moves a physical robot (actuation-enable interlock defaults OFF).
    is_hardware = True
    #: True if ``send_command`` honours ``base_twist`` (a mobile base).
    supports_base = False
    #: Constructor arguments exposed as driver parameters (see :class:`BackendParameter`).
    parameters: Tuple[BackendParameter, ...] = ()
    #: Joint command interfaces ``send_joint_command`` accepts ('joint_position',
    #: 'joint_velocity'); empty: end-effector twists only (docs/joint_space.md).
    joint_interfaces: Tuple[str, ...] = ()
    #: False when the robot publishes ``joint_states`` itself (e.g. ros2_control's
    #: joint_state_broadcaster): the driver then does not republish them.
    publishes_joint_states = True

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any],
                        log: Optional[Callable[[str], None]] = None) -> 'RobotBackend':
        """Build the backend from its parameters' values (keyed by parameter name).

        The default passes each value as the keyword ``argument`` of its
        :class:`BackendParameter`; override to convert values (``log`` is the driver
        node's info logger, for backends that want one).
        """
        return cls(**{p.argument: values[p.name] for p in cls.parameters})

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

    def send_joint_command(self, positions: Optional[np.ndarray],
                           velocities: Optional[np.ndarray], gripper: float,
                           dt: float) -> None:
        """Apply one already-limited joint command for ``dt`` seconds.

        ``positions`` (target positions, ``joint_position``) or ``velocities``
        (``joint_velocity``) is an array in the driver's ``joint_names`` order, the other
        is None; ``gripper`` is the target opening 0 (closed) .. 1 (open). Both None: the
        actuation interlock is off, so command nothing (a simulator keeps stepping with
        its last targets). Only called with an interface listed in :attr:`joint_interfaces`.
        """
        raise NotImplementedError(f'backend {self.name!r} takes no joint commands')

    def attach_node(self, node: Any) -> None:
        """Called once by the driver node before :meth:`start`.

        Backends that talk ROS themselves create their publishers and subscriptions on
        ``node`` here; the default does nothing (this module stays free of rclpy).
        """
        return None

    @abc.abstractmethod
    def read_state(self) -> RobotState:
        """Return the latest measured robot state."""

    def cameras(self) -> Dict[str, Tuple[int, int]]:
        """Map camera name -> (width, height) of cameras this backend renders itself."""
        return {}

    def render(self, camera: str) -> np.ndarray:
        """Return an (H, W, 3) uint8 RGB image from ``camera`` (simulators only)."""
        raise NotImplementedError(f'backend {self.name!r} renders no cameras')

    def task_status(self) -> Optional[dict]:
        """Simulators with a task episode: its instruction and outcome so far; else None."""
        return None

    def task_instruction(self) -> Optional[str]:
        """Simulators with a task episode: the episode's instruction; else None."""
        return None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


# name -> 'module:attribute' (imported on first use so e.g. mujoco loads only when needed)
# or a callable / class returning a backend. Entry points of ENTRY_POINT_GROUP come after.
_REGISTRY: Dict[str, object] = {
    'mujoco': 'vla_ros.drivers.mujoco_backend:MujocoBackend',
    'dry_run': 'vla_ros.drivers.dry_run:DryRunBackend',
    'ros2_control': 'vla_ros.drivers.ros2_control_backend:Ros2ControlBackend',
    'moveit_servo': 'vla_ros.drivers.moveit_servo_backend:MoveItServoBackend',
}


def register_backend(name: str, factory) -> None:
    """Register ``factory`` (a backend class, callable, or ``'module:Class'``) as ``name``."""
    _REGISTRY[name] = factory


def _entry_points() -> Dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> Tuple[str, ...]:
    """Names accepted by :func:`make_backend`: built-in, registered and installed plugins."""
    return tuple(sorted(set(_REGISTRY) | set(_entry_points())))


def _import(path: str, name: str):
    module, _, attr = path.partition(':')
    try:
        target = importlib.import_module(module)
        for part in attr.split('.'):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise BackendError(f'cannot load backend {name!r} from {path!r}: {err}') from err
    return target


def resolve_backend(name: str):
    """The class (or factory) behind ``name``, without building it.

    Looked up in the registry, then in installed ``vla_ros.backends`` entry points, then
    taken as ``'package.module:Class'``. Raises BackendError (a ValueError) listing the
    known names.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        entry_point = _entry_points().get(name)
        if entry_point is not None:
            try:
                factory = entry_point.load()
            except Exception as err:  # noqa: BLE001 - any import error, named
                raise BackendError(f'cannot load backend {name!r} from entry point '
                                   f'{entry_point.value!r}: {err}') from err
    if factory is None and ':' in name:
        factory = name  # a user backend given by import path
    if factory is None:
        raise BackendError(
            f'unknown backend {name!r}; known: {", ".join(available_backends())} '
            f"(or 'package.module:Class', or register one in the entry-point group "
            f'{ENTRY_POINT_GROUP!r})')
    if isinstance(factory, str):
        factory = _import(factory, name)
    if not callable(factory):
        raise TypeError(f'backend {name!r} is not a class or factory: {factory!r}')
    return factory


def backend_parameters(factory) -> Tuple[BackendParameter, ...]:
    """The parameters a backend class (from :func:`resolve_backend`) declares."""
    declared = tuple(getattr(factory, 'parameters', ()) or ())
    for p in declared:
        if not isinstance(p, BackendParameter):
            raise TypeError(f'{factory!r}.parameters must hold BackendParameter, got {p!r}')
    names = [p.name for p in declared]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BackendError(f'{factory!r} declares parameters more than once: {duplicates}')
    return declared


def _checked(backend, name):
    if not isinstance(backend, RobotBackend):
        raise TypeError(f'backend {name!r} is not a RobotBackend')
    return backend


def create_backend(name: str, values: Mapping[str, Any],
                   log: Optional[Callable[[str], None]] = None) -> RobotBackend:
    """Build backend ``name`` from its parameter values (what the driver node does).

    Missing values take the declared defaults; a value outside its declared bounds, or a
    name the backend does not declare, is a BackendError naming it.
    """
    factory = resolve_backend(name)
    declared = backend_parameters(factory)
    unknown = sorted(set(values) - {p.name for p in declared})
    if unknown:
        raise BackendError(f'backend {name!r} takes no parameters {unknown}; it declares '
                           f'{[p.name for p in declared]}')
    full = {p.name: p.check(values.get(p.name, p.default)) for p in declared}
    build = getattr(factory, 'from_parameters', None)
    if build is not None:
        return _checked(build(full, log=log), name)
    return _checked(factory(**{p.argument: full[p.name] for p in declared}), name)


def make_backend(name: str, **params) -> RobotBackend:
    """Create the backend registered as ``name`` (or ``'module:Class'``) with keyword args.

    For code that builds a backend directly; the driver node uses :func:`create_backend`.
    Raises BackendError (a ValueError) listing the known names for an unknown one.
    """
    return _checked(resolve_backend(name)(**params), name)
