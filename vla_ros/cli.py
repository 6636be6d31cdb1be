"""``vla-ros``: the command line for pip users (and handy on a full ROS 2 install too).

Commands:
vla-ros launch CONFIG [name:=value ...]   start a configuration (like ros2 launch)
vla-ros instruct "pick up the red cube"  publish the instruction (latched)
vla-ros policy NAME                      hot-swap the policy (a parameter change)
vla-ros status [--json]                  print the inference node's PolicyStatus
vla-ros policies [--json]                list registered policies
vla-ros demo                             run the simulated end-to-end demo
"""

import argparse
import json
import sys
import time


def _split_assignments(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if ':=' not in item:
            raise SystemExit(f'expected name:=value, got {item!r}')
        name, value = item.split(':=', 1)
        out[name] = value
    return out


def _topic(namespace: str, name: str) -> str:
    ns = namespace.strip('/')
    return f'/{ns}/{name}' if ns else f'/{name}'


def cmd_launch(args) -> int:
    """Start a bringup configuration and stop it cleanly on Ctrl-C."""
    from vla_ros.launcher import ProcessLauncher

    try:
        launcher = ProcessLauncher(args.configuration, _split_assignments(args.arguments))
    except ValueError as exc:
        print(f'vla-ros launch: {exc}', file=sys.stderr)
        return 2
    if args.print:
        for command in launcher.commands():
            print(' '.join(command))
        return 0
    return launcher.run_until_interrupted()


class _RosSession:
    """rclpy init + one node, shut down on exit."""

    def __init__(self, name: str):
        import rclpy

        self.rclpy = rclpy
        rclpy.init()
        self.node = rclpy.create_node(name)

    def __enter__(self):
        return self.node

    def __exit__(self, *exc):
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def cmd_instruct(args) -> int:
    """Publish the instruction on a latched topic and wait until a subscriber has it."""
    from std_msgs.msg import String

    from vla_ros.nodes import qos

    if not args.text.strip():
        print('vla-ros instruct: the instruction is empty', file=sys.stderr)
        return 2
    with _RosSession('vla_instruct') as node:
        pub = node.create_publisher(String, _topic(args.namespace, 'instruction'),
                                    qos.INSTRUCTION)
        pub.publish(String(data=args.text))
        deadline = time.monotonic() + args.timeout
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if pub.get_subscription_count() == 0:
            print('vla-ros instruct: no subscriber on the instruction topic', file=sys.stderr)
            return 1
        time.sleep(0.5)  # transient local: let the late joiner fetch the sample
    return 0


def cmd_policy(args) -> int:
    """Set the inference node's ``policy`` parameter (validated by the node)."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    service = _topic(args.namespace, f'{args.node}/set_parameters')
    with _RosSession('vla_policy_cli') as node:
        client = node.create_client(SetParameters, service)
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f'vla-ros policy: {service} not available', file=sys.stderr)
            return 1
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=args.name)
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter(name='policy', value=value)]))
        import rclpy

        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done():
            print('vla-ros policy: no answer', file=sys.stderr)
            return 1
        result = future.result().results[0]
        if not result.successful:
            print(f'vla-ros policy: rejected: {result.reason}', file=sys.stderr)
            return 1
        print(f'policy set to {args.name!r}; it loads in the background (see vla-ros status)')
    return 0


def cmd_status(args) -> int:
    """Print the next PolicyStatus message."""
    import rclpy
    from vla_ros_msgs.msg import PolicyStatus

    from vla_ros.nodes import qos

    states = {PolicyStatus.STATE_LOADING: 'loading', PolicyStatus.STATE_READY: 'ready',
              PolicyStatus.STATE_RUNNING: 'running', PolicyStatus.STATE_HOLDING: 'holding',
              PolicyStatus.STATE_ERROR: 'error'}
    received = []
    with _RosSession('vla_status_cli') as node:
        node.create_subscription(PolicyStatus, _topic(args.namespace, 'vla/status'),
                                 received.append, qos.STATUS)
        deadline = time.monotonic() + args.timeout
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    if not received:
        print('vla-ros status: no status received', file=sys.stderr)
        return 1
    m = received[0]
    report = {'policy': m.policy, 'state': states.get(m.state, str(m.state)),
              'last_inference_latency_s': m.last_inference_latency,
              'queue_depth': m.queue_depth, 'observation_age_s': m.observation_age,
              'instruction': m.instruction, 'message': m.message}
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f'{key:26s} {value}')
    return 0


def cmd_policies(args) -> int:
    """List the registered policies (--json: with heads, chunk lengths, parameter counts)."""
    from vla_ros.policies.listing import format_policy_table, policy_table
    from vla_ros.policies.registry import available_policies, policy_info

    if args.json or args.details:
        rows = policy_table(include_full=True)
        print(json.dumps(rows, indent=2) if args.json else format_policy_table(rows))
        return 0
    for name in available_policies():  # quick listing: builds nothing
        info = policy_info(name)
        print(f'{name:12s} {info.family:10s} {info.description}')
    return 0


def cmd_demo(args) -> int:
    """Run the simulated end-to-end demo."""
    from vla_ros.demo import run_demo

    summary = run_demo(output=args.output, duration=args.duration,
                       instruction=args.instruction, configuration=args.configuration,
                       arguments=_split_assignments(args.arguments), task=args.task,
                       task_seed=args.task_seed, task_split=args.task_split)
    print(json.dumps(summary, indent=2))
    return 0 if summary.get('success') else 1


def cmd_bench(args) -> int:
    """Run a benchmark and print its JSON object."""
    if args.benchmark == 'pipeline' and args.real:
        from vla_ros.benchmarking.pipeline_real import main as run_real

        return run_real(['--phase', str(args.phase)]
                        + (['--output', args.output] if args.output else []))
    if args.benchmark == 'pipeline':
        from vla_ros.benchmarking.pipeline import run

        print(json.dumps(run(args.latency, args.duration), indent=2))
        return 0
    from vla_ros.reliability.cli import run_bench_faults

    result = run_bench_faults(args)
    print(json.dumps(result, indent=2))
    return 0 if result.get('passed') else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vla-ros``."""
    parser = argparse.ArgumentParser(prog='vla-ros', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('launch', help='start a configuration (as ros2 launch would)')
    p.add_argument('configuration', help='e.g. openvla_arm, sim_arm, rt1_mobile')
    p.add_argument('arguments', nargs='*', help='name:=value launch arguments')
    p.add_argument('--print', action='store_true', help='print the node commands only')
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser('instruct', help='publish an instruction')
    p.add_argument('text')
    p.add_argument('--namespace', default='')
    p.add_argument('--timeout', type=float, default=10.0)
    p.set_defaults(func=cmd_instruct)

    p = sub.add_parser('policy', help='switch the running policy')
    p.add_argument('name')
    p.add_argument('--namespace', default='')
    p.add_argument('--node', default='vla_inference')
    p.add_argument('--timeout', type=float, default=10.0)
    p.set_defaults(func=cmd_policy)

    p = sub.add_parser('status', help="print the inference node's status")
    p.add_argument('--namespace', default='')
    p.add_argument('--json', action='store_true')
    p.add_argument('--timeout', type=float, default=10.0)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser('policies', help='list registered policies')
    p.add_argument('--json', action='store_true',
                   help='every policy with action head, type, chunk length, tiny and full '
                        'parameter counts (builds each tiny model)')
    p.add_argument('--details', action='store_true', help='the --json table as text')
    p.set_defaults(func=cmd_policies)

    from vla_ros.bags.cli import add_bag_parser
    from vla_ros.evaluation.cli import add_collect_parser, add_eval_parser
    from vla_ros.training.cli import add_train_parser

    add_train_parser(sub)
    add_bag_parser(sub)
    add_eval_parser(sub)
    add_collect_parser(sub)

    from vla_ros.reliability.cli import add_arguments as add_fault_arguments

    p = sub.add_parser('bench', help='run a benchmark (prints JSON): pipeline or faults')
    p.add_argument('benchmark', choices=['pipeline', 'faults'])
    p.add_argument('--latency', type=float, default=0.3, help='pipeline: policy latency (s)')
    p.add_argument('--duration', type=float, default=20.0, help='pipeline: measured seconds')
    p.add_argument('--real', action='store_true',
                   help='pipeline: real torch policies (OpenVLA, a swap to a ~390 MB '
                        'Octo-style checkpoint and back), policy process vs policy thread')
    p.add_argument('--phase', type=float, default=20.0,
                   help='pipeline --real: seconds of each of its three phases')
    p.add_argument('--output', help='pipeline --real: also write the JSON to this file')
    add_fault_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('demo', help='simulated arm + inference node end to end')
    p.add_argument('--output', default='demo_output')
    p.add_argument('--duration', type=float, default=8.0)
    p.add_argument('--instruction', default='',
                   help="default: the task episode's instruction, or 'move the gripper "
                        "forward' without --task")
    p.add_argument('--configuration', default='sim_arm')
    p.add_argument('--task', default='', help="sim task episode: reach, push or pick_up "
                   "(the instruction defaults to the episode's)")
    p.add_argument('--task-seed', type=int, default=1000)
    p.add_argument('--task-split', choices=('train', 'test'), default='test',
                   help="episode stream: 'test' (held-out paraphrases) or 'train' (training "
                        'instruction templates; seeds >= 5000 are still unseen layouts)')
    p.add_argument('arguments', nargs='*', help='name:=value launch arguments')
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    """Entry point of ``vla-ros``."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
