"""``make demo``: the simulated arm and the inference node, end to end through ROS.

Starts a bringup configuration as processes (the same path as ``vla-ros launch``), sends
an instruction, records what the robot is told and does for a bounded time, then leaves
behind a picture of the camera view, a plot of the commands over time and a summary.
"""

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from vla_ros.launcher import ProcessLauncher


class _Recorder:
    """A node that listens to the commands, the robot and the status."""

    def __init__(self, context):
        import rclpy
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from vla_ros_msgs.msg import PolicyStatus

        from vla_ros.nodes import qos

        self.node = rclpy.create_node('vla_demo_recorder', context=context)
        self.commands, self.applied, self.poses, self.states = [], [], [], []
        self.first_image = self.last_image = None
        self.start = time.monotonic()
        n = self.node
        n.create_subscription(TwistStamped, 'cmd/ee_twist', self._on_command, qos.COMMAND)
        n.create_subscription(TwistStamped, 'vla_driver/applied_twist', self._on_applied,
                              qos.COMMAND)
        n.create_subscription(PoseStamped, 'ee_pose', self._on_pose, qos.SENSOR)
        n.create_subscription(PolicyStatus, 'vla/status', self._on_status, qos.STATUS)
        n.create_subscription(Image, 'camera/front/image_raw', self._on_image, qos.SENSOR)
        from std_msgs.msg import Bool
        from vla_ros_msgs.msg import GripperCommand

        self.grippers, self.terminated_at = [], None
        n.create_subscription(GripperCommand, 'cmd/gripper', self._on_gripper, qos.COMMAND)
        n.create_subscription(Bool, 'cmd/terminate', self._on_terminate, qos.COMMAND)
        self.instruction_pub = n.create_publisher(String, 'instruction', qos.INSTRUCTION)
        self.task_status = None
        self.success_image = None
        n.create_subscription(String, 'vla_driver/task_status', self._on_task,
                              qos.LATCHED)

    def _on_task(self, m):
        import json

        self.task_status = json.loads(m.data)
        if self.task_status.get('success') and self.success_image is None:
            # The newest camera frame (30 Hz) when the driver first judged the task done:
            # the moment worth showing, since the run goes on for a while after it.
            self.success_image = self.last_image

    def _t(self):
        return time.monotonic() - self.start

    def _on_command(self, m):
        t = m.twist
        self.commands.append((self._t(), t.linear.x, t.linear.y, t.linear.z))

    def _on_applied(self, m):
        t = m.twist
        self.applied.append((self._t(), t.linear.x, t.linear.y, t.linear.z))

    def _on_pose(self, m):
        p = m.pose.position
        self.poses.append((self._t(), p.x, p.y, p.z))

    def _on_gripper(self, m):
        self.grippers.append((self._t(), float(m.position)))

    def _on_terminate(self, m):
        if m.data and self.terminated_at is None:
            self.terminated_at = self._t()

    def _on_status(self, m):
        self.states.append((self._t(), int(m.state), m.message))

    def _on_image(self, m):
        from vla_ros.nodes.image_conversion import image_msg_to_rgb

        rgb = image_msg_to_rgb(m, copy=True)
        if self.first_image is None:
            self.first_image = rgb
        self.last_image = rgb


def _save_pictures(rec: _Recorder, out: Path, instruction: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if rec.first_image is not None:
        panels = [(rec.first_image, 'front camera: start')]
        if rec.success_image is not None:
            panels.append((rec.success_image, 'task success'))
        panels.append((rec.last_image, 'front camera: end'))
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3))
        for ax, (img, title) in zip(axes, panels, strict=True):
            ax.imshow(img)
            ax.set_title(title)
            ax.axis('off')
        fig.suptitle(f'"{instruction}"')
        fig.tight_layout()
        fig.savefig(out / 'camera.png', dpi=100)
        plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    if rec.commands:
        c = np.array(rec.commands)
        for i, label in enumerate(('vx', 'vy', 'vz'), start=1):
            axes[0].plot(c[:, 0], c[:, i], label=f'commanded {label}')
    if rec.applied:
        a = np.array(rec.applied)
        axes[0].plot(a[:, 0], a[:, 1], '--', label='applied vx (after limits/watchdog)')
    axes[0].set_ylabel('end-effector velocity (m/s)')
    axes[0].legend(loc='upper right', fontsize=8)
    if rec.poses:
        p = np.array(rec.poses)
        for i, label in enumerate(('x', 'y', 'z'), start=1):
            axes[1].plot(p[:, 0], p[:, i], label=label)
    axes[1].set_ylabel('end-effector position (m)')
    axes[1].set_xlabel('time since start (s)')
    axes[1].legend(loc='upper right', fontsize=8)
    fig.tight_layout()
    fig.savefig(out / 'commands.png', dpi=100)
    plt.close(fig)


def _chatter(grippers, sent: float) -> int:
    """Reversals of the gripper command within 0.5 s after a grasp (cmd/gripper stream)."""
    closed = [(t, v < 0.5) for t, v in grippers if t >= sent]
    changes = [t for (t, c), (_, prev) in zip(closed[1:], closed[:-1], strict=False)
               if c != prev]
    grasp = next((t for (t, c), (_, prev) in zip(closed[1:], closed[:-1], strict=False)
                  if c and not prev), None)
    if grasp is None:
        return 0
    return sum(1 for a, b in zip(changes[:-1], changes[1:], strict=False)
               if a >= grasp and b - a < 0.5)


def run_demo(output='demo_output', duration=8.0, instruction='',
             configuration='sim_arm', arguments=None, startup_timeout=60.0,
             task='', task_seed=1000, task_split='test', after_success=1.0) -> dict:
    """Run the demo and return its summary (also written to ``output/summary.json``).

    With ``task`` the simulated scene is an episode of that sim task: the instruction is
    the episode's (unless given), the run ends ``after_success`` seconds after the task
    first succeeds (None: runs the whole ``duration``, as `vla-ros eval` runs to the
    horizon), and the summary reports the simulator's verdict at first success and at
    the end, whether the policy said it was done, and gripper chatter.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    logs = open(out / 'nodes.log', 'w')  # noqa: SIM115 - closed in finally
    arguments = dict(arguments or {})
    if task:
        # The demo publishes the instruction itself (and times the episode from then on).
        arguments.update(task=task, task_seed=str(task_seed), task_split=task_split,
                         publish_task_instruction='false')
    launcher = ProcessLauncher(configuration, arguments, stdout=logs, stderr=logs)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(os.environ.get('ROS_DOMAIN_ID', '0')))
    rec = _Recorder(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(rec.node)
    try:
        launcher.start()
        ready = time.monotonic() + startup_timeout
        # The episode's clock starts once the policy has loaded (state past LOADING): the
        # policy process imports torch and warms up first, which is no part of the task.
        while rec.first_image is None or not rec.states or rec.states[-1][1] == 0 \
                or (task and rec.task_status is None):
            if time.monotonic() > ready:
                raise RuntimeError(f'nodes or the policy did not come up within '
                                   f'{startup_timeout} s; see {out / "nodes.log"}')
            if launcher.poll():
                raise RuntimeError(f'a node exited: {launcher.poll()}; see nodes.log')
            executor.spin_once(timeout_sec=0.1)
        from std_msgs.msg import String

        if not instruction:
            instruction = rec.task_status['instruction'] if task else \
                'move the gripper forward'
        rec.instruction_pub.publish(String(data=instruction))
        sent = rec._t()
        end = time.monotonic() + duration
        succeeded_at = None
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
            if task and succeeded_at is None and rec.task_status['success']:
                succeeded_at = rec._t() - sent
                if after_success is not None:  # show a moment of the result
                    end = min(end, time.monotonic() + after_success)
    finally:
        codes = launcher.stop()
        executor.shutdown()
        rec.node.destroy_node()
        rclpy.try_shutdown(context=context)
        logs.close()

    _save_pictures(rec, out, instruction)
    after = [c for c in rec.commands if c[0] >= sent]
    span = (after[-1][0] - after[0][0]) if len(after) > 1 else 0.0
    moving = [c for c in after if abs(c[1]) + abs(c[2]) + abs(c[3]) > 0]
    poses = [p for p in rec.poses if p[0] >= sent]
    displacement = (np.array(poses[-1][1:]) - np.array(poses[0][1:])).tolist() \
        if len(poses) > 1 else [math.nan] * 3
    state_names = {0: 'loading', 1: 'ready', 2: 'running', 3: 'holding', 4: 'error',
                   5: 'done'}
    summary = {
        'configuration': configuration, 'instruction': instruction,
        'duration_s': duration,
        'commands_received': len(after),
        'command_rate_hz': round((len(after) - 1) / span, 2) if span > 0 else 0.0,
        'moving_command_fraction': round(len(moving) / max(len(after), 1), 3),
        'ee_displacement_m': [round(v, 4) for v in displacement],
        'final_state': state_names.get(rec.states[-1][1], '?') if rec.states else 'none',
        'final_status_message': rec.states[-1][2] if rec.states else '',
        'policy_reported_done': any(st[1] == 5 for st in rec.states if st[0] >= sent),
        'seconds_to_terminate': None if rec.terminated_at is None
        else round(rec.terminated_at - sent, 2),
        'gripper_chatter_events': _chatter(rec.grippers, sent),
        'node_exit_codes': codes,
        'pictures': ['camera.png', 'commands.png'],
    }
    if task:
        summary['task'] = rec.task_status
        summary['task_success'] = bool(rec.task_status['success'] or succeeded_at is not None)
        # Success counts when first reached, as in `vla-ros eval`; whether the object is
        # still held when the run stops is reported beside it.
        summary['task_success_at_end'] = bool(rec.task_status['success'])
        summary['seconds_to_success'] = None if succeeded_at is None else round(
            succeeded_at, 2)
        summary['success'] = summary['task_success']
    else:
        summary['success'] = bool(summary['moving_command_fraction'] > 0.5
                                  and np.linalg.norm(displacement) > 0.02)
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    return summary
