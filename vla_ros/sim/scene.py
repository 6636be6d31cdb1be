"""MuJoCo arm-on-a-table scene driven by end-effector twists (no ROS imports).

``ArmSim`` loads ``assets/arm_table.xml`` (optionally adding a planar mobile base with
``mujoco.MjSpec``), turns end-effector twists into joint position targets with damped
least-squares IK, steps the physics and renders the cameras offscreen. Set
``MUJOCO_GL=egl`` before importing mujoco on a headless machine.
"""

import math
import os

import mujoco
import numpy as np

from vla_ros.sim.kinematics import dls_joint_velocities, panda_like_chain

__all__ = ['ArmSim', 'MODEL_PATH', 'project_points']

MODEL_PATH = os.path.join(os.path.dirname(__file__), 'assets', 'arm_table.xml')

_CHAIN = panda_like_chain()
_FINGER_OPEN = 0.04  # metres of travel per finger
_TABLE_TOP = 0.4
# Objects are spawned in this world-frame box on the table (x, y), at least _MIN_GAP apart.
_SPAWN_LOW, _SPAWN_HIGH = np.array([0.38, -0.25]), np.array([0.7, 0.25])
_MIN_GAP = 0.1
# Table top extent in the world frame (x, y), with a margin so objects stay on it.
_TABLE_X, _TABLE_Y = (0.23, 0.87), (-0.47, 0.47)
_BASE_JOINTS = ('base_x', 'base_y', 'base_yaw')


def _load_model(mobile):
    spec = mujoco.MjSpec.from_file(MODEL_PATH)
    if mobile:
        # Planar base: x / y slides and a yaw hinge under the arm, servoed like the arm.
        base = spec.body('base')
        slide, hinge = mujoco.mjtJoint.mjJNT_SLIDE, mujoco.mjtJoint.mjJNT_HINGE
        for name, jtype, axis, kp in (('base_x', slide, (1, 0, 0), 20000.0),
                                      ('base_y', slide, (0, 1, 0), 20000.0),
                                      ('base_yaw', hinge, (0, 0, 1), 5000.0)):
            base.add_joint(name=name, type=jtype, axis=axis, damping=10.0)
            act = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
            act.set_to_position(kp=kp, kv=0.1 * kp)
    return spec.compile()


def project_points(points, position, rotation, fovy_deg, size):
    """Pixel (column, row) of arm-base-frame ``points`` (N, 3) in a (w, h) = ``size`` image.

    Pinhole model of a MuJoCo camera at ``position`` with axes ``rotation`` (see
    :meth:`ArmSim.camera_pose`): the vertical field of view spans the image height. Pixel
    ``i`` covers [i, i + 1), so a pixel's centre is at ``i + 0.5``. Points behind the
    camera give NaN.
    """
    w, h = size
    local = (np.asarray(points, float) - position) @ rotation   # camera frame
    depth = -local[:, 2]
    focal = (h / 2) / np.tan(np.deg2rad(fovy_deg) / 2)
    with np.errstate(divide='ignore', invalid='ignore'):
        col = w / 2 + focal * local[:, 0] / depth
        row = h / 2 - focal * local[:, 1] / depth
    out = np.stack([col, row], 1)
    out[depth <= 0] = np.nan
    return out


class ArmSim:
    """A 7-DoF arm with a parallel gripper on a table, optionally on a planar mobile base.

    Poses are reported in the arm-base frame (body ``base``, on top of the pedestal) unless
    ``frame='world'`` is passed, the frame in which twists are commanded too. Without the
    mobile base, the arm-base frame is the world frame shifted up to the table top (z = 0.4).
    """

    ARM_JOINTS = _CHAIN.joint_names
    FINGER_JOINTS = ('finger_left', 'finger_right')
    OBJECTS = ('red_cube', 'blue_cylinder', 'green_cube', 'yellow_sphere')
    HOME = _CHAIN.home

    def __init__(self, mobile=False, image_size=(224, 224), seed=None,
                 cameras=('front', 'wrist')):
        self.mobile = bool(mobile)
        w, h = (image_size, image_size) if np.isscalar(image_size) else image_size
        self.image_size = (int(w), int(h))
        self.model = _load_model(self.mobile)
        self.data = mujoco.MjData(self.model)
        m = self.model
        for cam in cameras:
            if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0:
                raise ValueError(f'unknown camera {cam!r}')
        self.cameras = tuple(cameras)
        self.joint_names = ((_BASE_JOINTS if self.mobile else ()) + self.ARM_JOINTS
                            + self.FINGER_JOINTS)
        jids = [m.joint(n).id for n in self.joint_names]
        self._qadr = m.jnt_qposadr[jids]
        self._vadr = m.jnt_dofadr[jids]
        arm = [m.joint(n).id for n in self.ARM_JOINTS]
        self._arm_q = m.jnt_qposadr[arm]
        self._arm_v = m.jnt_dofadr[arm]
        self._lower, self._upper = m.jnt_range[arm, 0].copy(), m.jnt_range[arm, 1].copy()
        self._arm_act = np.array([m.actuator(n).id for n in self.ARM_JOINTS])
        self._grip_act = m.actuator('gripper').id
        self._finger_q = m.jnt_qposadr[[m.joint(n).id for n in self.FINGER_JOINTS]]
        if self.mobile:
            self._base_q = m.jnt_qposadr[[m.joint(n).id for n in _BASE_JOINTS]]
            self._base_v = m.jnt_dofadr[[m.joint(n).id for n in _BASE_JOINTS]]
            self._base_act = np.array([m.actuator(n).id for n in _BASE_JOINTS])
        self._site = m.site('ee').id
        self._base_body = m.body('base').id
        self._obj_q = {n: m.jnt_qposadr[m.joint(n).id] for n in self.OBJECTS}
        self._obj_body = {n: m.body(n).id for n in self.OBJECTS}
        self._obj_half_height = {n: self._half_height(m.geom(n)) for n in self.OBJECTS}
        self._jacp, self._jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        self._renderers = {}
        self._rng = np.random.default_rng(seed)
        self.reset(seed)

    @staticmethod
    def _half_height(geom):
        if geom.type == mujoco.mjtGeom.mjGEOM_BOX:
            return float(geom.size[2])
        if geom.type == mujoco.mjtGeom.mjGEOM_CYLINDER:
            return float(geom.size[1])
        return float(geom.size[0])

    @property
    def time(self):
        """Simulated seconds since the last reset."""
        return float(self.data.time)

    @property
    def timestep(self):
        """Physics timestep in seconds."""
        return float(self.model.opt.timestep)

    def reset(self, seed=None, placements=None):
        """Home the robot and scatter the objects on the table (reproducibly given ``seed``).

        ``placements`` optionally maps object names to ``(x, y, yaw)`` in the arm-base frame
        (metres, radians) for tasks that lay out their own scene; unnamed objects are
        scattered as usual, away from the placed ones.
        """
        placements = self._check_placements(placements)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self._arm_q] = self.HOME
        d.qpos[self._finger_q] = _FINGER_OPEN
        self._q_target = self.HOME.copy()
        d.ctrl[self._arm_act] = self.HOME
        d.ctrl[self._grip_act] = _FINGER_OPEN
        if self.mobile:
            self._base_target = np.zeros(3)
            d.ctrl[self._base_act] = 0.0
        # Fixed placements are in the arm-base frame, which the reset puts at the world
        # origin shifted up to the table top, so x / y carry over unchanged.
        placed = [np.array(p[:2]) for p in placements.values()]
        for name in self.OBJECTS:
            if name in placements:
                x, y, yaw = placements[name]
                xy = np.array([x, y])
            else:
                # Rejection sampling; the spawn box is roomy enough for this to end quickly.
                while True:
                    xy = self._rng.uniform(_SPAWN_LOW, _SPAWN_HIGH)
                    if all(np.linalg.norm(xy - p) >= _MIN_GAP for p in placed):
                        break
                placed.append(xy)
                yaw = self._rng.uniform(-np.pi, np.pi)
            a = self._obj_q[name]
            d.qpos[a:a + 3] = (xy[0], xy[1], _TABLE_TOP + self._obj_half_height[name] + 1e-3)
            d.qpos[a + 3:a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        # Let objects settle onto the table, then restart the clock.
        mujoco.mj_step(m, d, nstep=50)
        d.time = 0.0
        mujoco.mj_forward(m, d)

    def _check_placements(self, placements):
        if placements is None:
            return {}
        out = {}
        for name, value in dict(placements).items():
            if name not in self.OBJECTS:
                raise ValueError(f'unknown object {name!r}; objects: {self.OBJECTS}')
            x, y, yaw = (float(v) for v in value)
            if not all(np.isfinite((x, y, yaw))):
                raise ValueError(f'placement of {name!r} must be finite, got {value!r}')
            if not (_TABLE_X[0] < x < _TABLE_X[1] and _TABLE_Y[0] < y < _TABLE_Y[1]):
                raise ValueError(f'placement of {name!r} at ({x:.3f}, {y:.3f}) is off the table')
            out[name] = (x, y, yaw)
        return out

    def set_arm_configuration(self, joints, opening):
        """Put the arm at ``joints`` (rad) and the fingers at ``opening`` (0..1), at rest.

        Kinematics only: the objects stay where they are and no physics step runs, so a
        recorded frame's pose can be rebuilt from its proprioception (e.g. to ask the
        expert what it would command there). The servo targets follow, so a later
        ``step_ee_twist`` starts from this pose.
        """
        joints = np.asarray(joints, float).reshape(len(self.ARM_JOINTS))
        if not (np.all(np.isfinite(joints)) and np.isfinite(opening)):
            raise ValueError('joints and opening must be finite')
        m, d = self.model, self.data
        joints = np.clip(joints, self._lower, self._upper)
        d.qpos[self._arm_q] = joints
        d.qvel[self._arm_v] = 0.0
        d.qpos[self._finger_q] = float(np.clip(opening, 0.0, 1.0)) * _FINGER_OPEN
        self._q_target = joints.copy()
        d.ctrl[self._arm_act] = joints
        d.ctrl[self._grip_act] = float(np.clip(opening, 0.0, 1.0)) * _FINGER_OPEN
        mujoco.mj_forward(m, d)

    def step_ee_twist(self, twist, gripper, base_twist=None, dt=0.05):
        """Move the end effector with ``twist`` for ``dt`` seconds and step the physics.

        ``twist`` is ``[vx, vy, vz, wx, wy, wz]`` (m/s, rad/s) of the ``ee`` site in the
        arm-base frame; ``gripper`` is 0 (closed) .. 1 (open); ``base_twist`` is
        ``[vx, vy, wz]`` in the base frame (mobile only). Zero twist holds the pose.
        """
        m, d = self.model, self.data
        twist = np.asarray(twist, float).reshape(6)
        if not (np.all(np.isfinite(twist)) and np.isfinite(gripper)):
            raise ValueError('twist and gripper must be finite')
        n = max(1, int(round(dt / m.opt.timestep)))
        span = n * m.opt.timestep  # dt rounded to whole physics steps
        rot = d.xmat[self._base_body].reshape(3, 3)
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._site)
        jac = np.vstack([self._jacp[:, self._arm_v], self._jacr[:, self._arm_v]])
        # The jacobian is in world coordinates; the twist is in the (possibly rotated) base.
        v = np.concatenate([rot @ twist[:3], rot @ twist[3:]])
        q = d.qpos[self._arm_q]
        if np.any(twist):
            # Integrate from the previous target, not the measured q, so servo lag does not
            # accumulate as drift; the null-space pull keeps the elbow near its home posture.
            dq = dls_joint_velocities(jac, v, self._q_target, self._lower, self._upper, span,
                                      q_rest=self.HOME, rest_gain=0.5)
        else:
            # A hold keeps the joint targets. The damped solve's null space is not exact, so
            # the elbow pull alone moved a held hand by 2.3 cm in 16 s and let grasped objects
            # slip out during long holds (the pick-up demo, issue 20).
            dq = np.zeros(len(self._q_target))
        start = self._q_target.copy()
        goal = np.clip(start + dq * span, self._lower, self._upper)
        # Anti-windup: never lead the measured joints by much when something blocks the arm.
        goal = np.clip(goal, q - 0.2, q + 0.2)
        self._q_target = goal
        d.ctrl[self._grip_act] = float(np.clip(gripper, 0.0, 1.0)) * _FINGER_OPEN
        base_start = base_goal = None
        if base_twist is not None:
            bt = np.asarray(base_twist, float).reshape(3)
            if not self.mobile:
                if np.any(bt != 0.0):
                    raise ValueError('base_twist given but the scene has no mobile base')
            else:
                base_start = self._base_target.copy()
                c, s = np.cos(base_start[2]), np.sin(base_start[2])
                base_goal = base_start + span * np.array(
                    [c * bt[0] - s * bt[1], s * bt[0] + c * bt[1], bt[2]])
                self._base_target = base_goal
        self._ramp(start, goal, n, base_start, base_goal)

    def _ramp(self, start, goal, n, base_start=None, base_goal=None):
        m, d = self.model, self.data
        for k in range(1, n + 1):
            # Ramp the targets across the substeps so the servos see a smooth trajectory.
            a = k / n
            d.ctrl[self._arm_act] = start + a * (goal - start)
            if base_goal is not None:
                d.ctrl[self._base_act] = base_start + a * (base_goal - base_start)
            mujoco.mj_step(m, d)
        # mj_step leaves kinematics one step stale; refresh for poses, jacobians and renders.
        mujoco.mj_forward(m, d)

    @property
    def arm_target(self):
        """The arm's current servo targets (rad), in ``ARM_JOINTS`` order."""
        return self._q_target.copy()

    @property
    def arm_limits(self):
        """``(lower, upper)`` joint ranges of the arm (rad), in ``ARM_JOINTS`` order."""
        return self._lower.copy(), self._upper.copy()

    def step_joint_targets(self, q_target, gripper, dt=0.05):
        """Servo the arm toward joint targets ``q_target`` (rad) for ``dt`` s, step the physics.

        The targets are clipped to the joint ranges, ramped from the previous targets over
        the physics substeps like :meth:`step_ee_twist` does, and kept as the targets a
        later twist or joint command starts from (switching is seamless). ``gripper`` is 0
        (closed) .. 1 (open). A mobile base keeps its target.
        """
        q_target = np.asarray(q_target, float).reshape(len(self.ARM_JOINTS))
        if not (np.all(np.isfinite(q_target)) and np.isfinite(gripper)):
            raise ValueError('joint targets and gripper must be finite')
        m, d = self.model, self.data
        n = max(1, int(round(dt / m.opt.timestep)))
        q = d.qpos[self._arm_q]
        goal = np.clip(q_target, self._lower, self._upper)
        # Anti-windup as for twists: never lead the measured joints by much.
        goal = np.clip(goal, q - 0.2, q + 0.2)
        start = self._q_target.copy()
        self._q_target = goal
        d.ctrl[self._grip_act] = float(np.clip(gripper, 0.0, 1.0)) * _FINGER_OPEN
        self._ramp(start, goal, n)

    def step_joint_velocities(self, dq, gripper, dt=0.05):
        """Move the arm's targets with joint velocities ``dq`` (rad/s) for ``dt`` seconds.

        The targets are integrated from the previous ones (not the measured positions, so
        servo lag does not accumulate as drift) and stepped as in
        :meth:`step_joint_targets`.
        """
        dq = np.asarray(dq, float).reshape(len(self.ARM_JOINTS))
        if not np.all(np.isfinite(dq)):
            raise ValueError('joint velocities must be finite')
        span = max(1, int(round(dt / self.model.opt.timestep))) * self.model.opt.timestep
        self.step_joint_targets(self._q_target + dq * span, gripper, dt)

    def _to_frame(self, pos, mat, frame):
        if frame == 'world':
            return pos.copy(), mat
        if frame != 'base':
            raise ValueError(f"frame must be 'base' or 'world', got {frame!r}")
        rb = self.data.xmat[self._base_body].reshape(3, 3)
        return rb.T @ (pos - self.data.xpos[self._base_body]), rb.T @ mat

    @staticmethod
    def _quat(mat):
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, np.ascontiguousarray(mat).reshape(9))
        return quat

    def ee_pose(self, frame='base'):
        """End-effector (``ee`` site) position and quaternion (w, x, y, z)."""
        d = self.data
        pos, mat = self._to_frame(d.site_xpos[self._site], d.site_xmat[self._site].reshape(3, 3),
                                  frame)
        return pos, self._quat(mat)

    def joint_positions(self):
        """Positions of ``joint_names`` (rad or m)."""
        return self.data.qpos[self._qadr].copy()

    def joint_velocities(self):
        """Velocities of ``joint_names`` (rad/s or m/s)."""
        return self.data.qvel[self._vadr].copy()

    def gripper_opening(self):
        """Measured gripper opening, 0 (closed) .. 1 (open)."""
        return float(np.clip(self.data.qpos[self._finger_q].mean() / _FINGER_OPEN, 0.0, 1.0))

    def base_pose(self):
        """Mobile base ``(x, y, yaw)`` in the world, or None without a mobile base."""
        if not self.mobile:
            return None
        return tuple(float(v) for v in self.data.qpos[self._base_q])

    def base_velocity(self):
        """Mobile base ``(vx, vy, wz)`` in the base's own frame, or None without a base."""
        if not self.mobile:
            return None
        vx, vy, wz = (float(v) for v in self.data.qvel[self._base_v])
        yaw = float(self.data.qpos[self._base_q][2])
        c, s = math.cos(yaw), math.sin(yaw)
        # The slide joints move along world x / y; odometry reports the twist in the base.
        return (c * vx + s * vy, -s * vx + c * vy, wz)

    def object_poses(self, frame='base'):
        """Map object name -> (position, quaternion wxyz)."""
        d = self.data
        poses = {}
        for name, b in self._obj_body.items():
            pos, mat = self._to_frame(d.xpos[b], d.xmat[b].reshape(3, 3), frame)
            poses[name] = (pos, self._quat(mat))
        return poses

    def camera_pose(self, camera):
        """``(position, rotation, fovy_deg)`` of ``camera`` in the arm-base frame.

        The rotation's columns are the camera's x (image right), y (image up) and z axes;
        MuJoCo cameras look along -z. With :func:`project_points` this maps scene points
        to pixels of :meth:`render`.
        """
        m, d = self.model, self.data
        cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cid < 0:
            raise ValueError(f'unknown camera {camera!r}')
        pos, rot = self._to_frame(d.cam_xpos[cid].copy(), d.cam_xmat[cid].reshape(3, 3).copy(),
                                  'base')
        return pos, rot, float(m.cam_fovy[cid])

    def camera_is_fixed(self, camera):
        """Whether ``camera`` is welded to the world (its pose never changes with the arm)."""
        m = self.model
        cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cid < 0:
            raise ValueError(f'unknown camera {camera!r}')
        return int(m.body_weldid[m.cam_bodyid[cid]]) == 0

    def object_half_height(self, name):
        """Half height (m) of an object: its centre's height above the table at rest."""
        return self._obj_half_height[name]

    def object_shape(self, name):
        """Return ``(kind, size)`` of an object's geom.

        ``kind`` is 'box' (size: half extents), 'cylinder' (radius, half height) or
        'sphere' (radius), so tasks can measure distances to the surface.
        """
        geom = self.model.geom(name)
        kinds = {mujoco.mjtGeom.mjGEOM_BOX: ('box', 3), mujoco.mjtGeom.mjGEOM_CYLINDER:
                 ('cylinder', 2), mujoco.mjtGeom.mjGEOM_SPHERE: ('sphere', 1)}
        kind, n = kinds[int(geom.type[0])]
        return kind, geom.size[:n].copy()

    def contacts(self, name):
        """Names of the geoms currently touching geom ``name`` (e.g. an object's geom)."""
        gid = self.model.geom(name).id
        n = self.data.ncon
        g1, g2 = self.data.contact.geom1[:n], self.data.contact.geom2[:n]
        others = np.concatenate([g2[g1 == gid], g1[g2 == gid]])
        return {mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_GEOM, int(g)) for g in others}

    def render(self, camera='front', size=None):
        """Render ``camera`` as an (H, W, 3) uint8 RGB array (``size`` = (w, h) override)."""
        w, h = size or self.image_size
        renderer = self._renderers.get((w, h))
        if renderer is None:
            vis = self.model.vis.global_
            vis.offwidth, vis.offheight = max(vis.offwidth, w), max(vis.offheight, h)
            renderer = self._renderers[(w, h)] = mujoco.Renderer(self.model, height=h, width=w)
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def close(self):
        """Free the renderers (GL contexts); rendering again recreates them."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
