"""Golden bags: short recordings of the shipped configurations on the simulated robot.

``vla-ros bag golden`` (``python -m vla_ros.bags.cli golden``) starts a configuration as processes
(the ``vla-ros launch`` path) with small camera images, records a few seconds of a scripted
task into ``test/golden/<name>``, then checks that the fresh bag regresses green. The test
suite replays them with ``vla-ros bag regress``: any change of the runtime, the command
shaping or the policy that alters what the robot is told shows up as a failure there.

Only configurations whose policy runs without a checkpoint can be recorded here (the
scripted policy; the model policies need weights that are not shipped). Each golden bag
stays well under 1 MB: 64x48 front-camera images at 10 Hz for ~4 s.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vla_ros.bags.recorder import Recorder, TopicSelection

IMAGE_SIZE = (64, 48)
GOLDEN_DIR = Path(__file__).resolve().parent.parent.parent / 'test' / 'golden'
RECORDED_TOPICS = ('instruction', 'camera/front/image_raw', 'cmd/ee_twist', 'cmd/joint',
                   'cmd/gripper', 'cmd_vel', 'cmd/terminate', 'vla/action_chunk',
                   'vla/status', 'joint_states')


@dataclass(frozen=True)
class GoldenSpec:
    """How one golden bag is made."""

    configuration: str
    instruction: str
    policy_params: dict
    arguments: dict = field(default_factory=dict)
    storage: str = 'sqlite3'
    compress: bool = False
    duration: float = 3.5
    description: str = ''


GOLDEN = {
    'sim_arm': GoldenSpec(
        'sim_arm', 'move the gripper forward',
        {'chunk_length': 8, 'pattern': 'constant', 'velocity': [0.005, 0.0, 0.0],
         'image_size': list(IMAGE_SIZE)},
        description='the shipped sim_arm configuration (scripted policy, receding '
                    'horizon), sqlite3 storage'),
    'sim_arm_sine_ensemble': GoldenSpec(
        'sim_arm', 'move the gripper around',
        {'chunk_length': 8, 'pattern': 'sine', 'velocity': [0.004, 0.002, 0.0],
         'image_size': list(IMAGE_SIZE)},
        arguments={'chunk_strategy': 'temporal_ensemble'}, storage='mcap', compress=True,
        description='sim_arm with time-varying chunks and temporal ensembling (chunk '
                    'timing matters), mcap storage with zstd chunks'),
    'sim_arm_joint': GoldenSpec(
        'vla', 'wave the first two joints',
        {'action_space': 'joint7_gripper', 'chunk_length': 8, 'pattern': 'sine',
         'velocity': [0.1, -0.1, 0.0, -2.5, 0.0, 2.4, 0.0], 'gripper': 0.04,
         'image_size': list(IMAGE_SIZE)},
        arguments={'robot': 'arm_joint', 'policy': 'scripted'},
        description='the simulated arm in joint space (robot:=arm_joint, cmd/joint absolute '
                    'position targets named joint1..joint7, the gripper as finger travel), '
                    'the scripted policy in joint7_gripper actions, sqlite3 storage'),
}


def _params_file(spec: GoldenSpec, directory: Path) -> Path:
    import yaml

    path = directory / 'golden_params.yaml'
    path.write_text(yaml.safe_dump({
        '/**/vla_driver': {'ros__parameters': {'image_width': IMAGE_SIZE[0],
                                               'image_height': IMAGE_SIZE[1]}},
        '/**/vla_inference': {'ros__parameters': {
            'policy_params': json.dumps(spec.policy_params)}},
    }))
    return path


def make_golden(name: str, output_dir: str | Path = GOLDEN_DIR, log=None,
                startup_timeout: float = 60.0) -> dict:
    """Record golden bag ``name`` (replacing an old one) and regress it; a summary."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from vla_ros_msgs.msg import PolicyStatus

    from vla_ros.bags.regress import run_regression
    from vla_ros.launcher import ProcessLauncher
    from vla_ros.nodes import qos

    log = log or (lambda text: None)
    spec = GOLDEN[name]
    out = Path(output_dir) / name
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix='vla_golden_'))
    logs = open(work / 'nodes.log', 'w')  # noqa: SIM115 - closed in finally
    launcher = ProcessLauncher(spec.configuration,
                               {**spec.arguments, 'params_file': str(_params_file(spec, work))},
                               stdout=logs, stderr=logs)
    context = rclpy.Context()
    rclpy.init(args=[], context=context, domain_id=int(os.environ.get('ROS_DOMAIN_ID', '0')),
               signal_handler_options=SignalHandlerOptions.NO)
    probe = rclpy.create_node('vla_golden_probe', context=context)
    seen = {'image': 0, 'status': 0}
    probe.create_subscription(Image, 'camera/front/image_raw',
                              lambda _: seen.__setitem__('image', seen['image'] + 1),
                              qos.SENSOR)
    probe.create_subscription(PolicyStatus, 'vla/status',
                              lambda _: seen.__setitem__('status', seen['status'] + 1),
                              qos.STATUS)
    instruction = probe.create_publisher(String, 'instruction', qos.INSTRUCTION)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05)
                                               for _ in iter(stop.is_set, True)], daemon=True)
    recorder = None
    try:
        launcher.start()
        spinner.start()
        deadline = time.monotonic() + startup_timeout
        while not (seen['image'] and seen['status']):
            if time.monotonic() > deadline or launcher.poll():
                raise RuntimeError(f'simulation did not come up; see {work / "nodes.log"}')
            time.sleep(0.1)
        recorder = Recorder(context, out, TopicSelection(RECORDED_TOPICS),
                            storage=spec.storage, compress=spec.compress, log=log)
        executor.add_node(recorder.node)
        selected = {f'/{t}' for t in RECORDED_TOPICS}
        while True:  # every selected topic the graph has is subscribed, parameters stored
            published = {t for t, _ in probe.get_topic_names_and_types()
                         if t in selected and probe.count_publishers(t)}
            missing = published - recorder.subscribed_topics()
            if not missing and recorder.summary.parameters_recorded:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f'recorder did not subscribe to {sorted(missing)} or fetch '
                                   f'the parameters')
            time.sleep(0.1)
        instruction.publish(String(data=spec.instruction))
        log(f'{name}: instruction sent, recording {spec.duration} s')
        time.sleep(spec.duration)
    finally:
        stop.set()
        if spinner.is_alive():
            spinner.join()
        summary = recorder.stop() if recorder is not None else None
        codes = launcher.stop()
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
        logs.close()
    result = run_regression(out)
    shutil.rmtree(work, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.iterdir())
    return {'path': str(out), 'description': spec.description, 'bytes': size,
            'counts': summary.counts if summary else {}, 'node_exit_codes': codes,
            'regress_passed': result.passed, 'ticks': result.ticks,
            'chunks': result.chunks_replayed}
