"""Pure-numpy serial-chain kinematics and damped least-squares velocity IK.

The MuJoCo scene gets its jacobians from MuJoCo; the dry-run backend has no physics engine,
so it uses the numpy chain here. Both share :func:`dls_joint_velocities`, so an end-effector
twist is turned into joint motion the same way with or without the simulator.
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    'Chain', 'panda_like_chain', 'generic_chain', 'forward', 'jacobian', 'dls_joint_velocities',
    'rotation_to_quat', 'quat_to_rotation',
]


@dataclass(frozen=True)
class Chain:
    """A serial chain of revolute joints whose frames are world-aligned at q = 0.

    Joint ``i`` sits at ``offsets[i]`` in the frame of joint ``i - 1`` (the base frame for
    ``i = 0``) and rotates about ``axes[i]``; the tool point sits at ``tool`` in the last
    joint's frame.
    """

    joint_names: tuple
    offsets: np.ndarray
    axes: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    tool: np.ndarray
    home: np.ndarray

    @property
    def dof(self):
        """Number of joints."""
        return len(self.joint_names)


def panda_like_chain():
    """Return the 7-DoF arm of ``assets/arm_table.xml`` (base frame to the ``ee`` site)."""
    return Chain(
        joint_names=tuple(f'joint{i}' for i in range(1, 8)),
        offsets=np.array([[0, 0, 0.1], [0, 0, 0.233], [0, 0, 0.316], [0.0825, 0, 0],
                          [-0.0825, 0, 0.384], [0, 0, 0], [0.088, 0, 0]], float),
        axes=np.array([[0, 0, 1], [0, 1, 0], [0, 0, 1], [0, -1, 0], [0, 0, 1], [0, -1, 0],
                       [0, 0, -1]], float),
        lower=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
        upper=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
        tool=np.array([0, 0, -0.207]),
        # Hand pointing down, tool ~0.22 m above the table (q2 - q4 - q6 = 0 keeps it down).
        home=np.array([0.0, -0.1, 0.0, -2.5, 0.0, 2.4, 0.0]),
    )


def generic_chain(dof):
    """Return a generic ``dof``-joint chain for dry runs of arms other than the 7-DoF one.

    Six joints make a classic elbow arm with a spherical-ish wrist (axes z y y z y z) whose
    home pose points the tool down, away from singularities; fewer joints take a prefix of
    it, more append alternating z / y joints at the wrist.
    """
    if dof < 1:
        raise ValueError(f'dof must be >= 1, got {dof}')
    axes = [[0, 0, 1], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]]
    offsets = [[0, 0, 0.1], [0, 0, 0.2], [0, 0, 0.4], [0, 0, 0.2], [0, 0, 0.2], [0, 0, 0]]
    home = [0.0, 0.4, 1.6, 0.0, np.pi - 2.0, 0.0]
    for i in range(6, dof):
        axes.append([0, 1, 0] if i % 2 == 0 else [0, 0, 1])
        offsets.append([0, 0, 0.05])
        home.append(0.0)
    return Chain(tuple(f'joint{i + 1}' for i in range(dof)), np.array(offsets[:dof], float),
                 np.array(axes[:dof], float), np.full(dof, -2.9), np.full(dof, 2.9),
                 np.array([0.0, 0.0, 0.15]), np.array(home[:dof]))


def _axis_angle(axis, angle):
    """Rotation matrix for a rotation of ``angle`` about unit ``axis`` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def forward(chain, q):
    """Forward kinematics in the base frame.

    Returns ``(tool_position, tool_rotation, joint_origins (n, 3), joint_axes (n, 3))``.
    """
    pos, rot = np.zeros(3), np.eye(3)
    origins, axes = np.zeros((chain.dof, 3)), np.zeros((chain.dof, 3))
    for i in range(chain.dof):
        pos = pos + rot @ chain.offsets[i]
        axes[i] = rot @ chain.axes[i]
        origins[i] = pos
        rot = rot @ _axis_angle(chain.axes[i], q[i])
    return pos + rot @ chain.tool, rot, origins, axes


def jacobian(chain, q):
    """Geometric 6 x n jacobian (linear rows first) of the tool point in the base frame."""
    tool, _, origins, axes = forward(chain, q)
    return np.vstack([np.cross(axes, tool - origins).T, axes.T])


def dls_joint_velocities(jac, twist, q, lower, upper, dt, damping=0.05, max_speed=2.0,
                         q_rest=None, rest_gain=0.0, margin=0.02):
    """Joint velocities realising ``twist`` with damped least squares, respecting limits.

    Joints that would cross ``[lower + margin, upper - margin]`` within ``dt`` are dropped
    from the solve (and the rest re-solved) instead of being clipped afterwards, which would
    bend the end-effector path. ``q_rest`` / ``rest_gain`` add a null-space pull towards a
    rest posture so the redundant joint does not wander off over long commands. The result is
    scaled uniformly (keeping its direction) so no joint exceeds ``max_speed`` rad/s.
    """
    n = jac.shape[1]
    lo, hi = lower + margin, upper - margin
    active = np.ones(n, bool)
    dq = np.zeros(n)
    for _ in range(3):
        j = jac * active
        pinv = j.T @ np.linalg.inv(j @ j.T + damping ** 2 * np.eye(jac.shape[0]))
        dq = pinv @ twist
        if q_rest is not None and rest_gain > 0.0:
            dq += ((np.eye(n) - pinv @ j) @ (rest_gain * (q_rest - q))) * active
        nxt = q + dq * dt
        blocked = active & (((nxt < lo) & (dq < 0)) | ((nxt > hi) & (dq > 0)))
        if not blocked.any():
            break
        active &= ~blocked
    dq *= active
    peak = np.max(np.abs(dq), initial=0.0)
    if peak > max_speed:
        dq *= max_speed / peak
    return dq


def rotation_to_quat(rot):
    """Quaternion (w, x, y, z) of a rotation matrix, with w >= 0."""
    m = np.asarray(rot, float)
    t = np.trace(m)
    if t > 0:
        s = 2.0 * np.sqrt(t + 1.0)
        q = np.array([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s,
                      (m[1, 0] - m[0, 1]) / s])
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.zeros(4)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quat_to_rotation(quat):
    """Rotation matrix of a quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(quat, float) / np.linalg.norm(quat)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
