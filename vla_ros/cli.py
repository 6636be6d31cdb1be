"""``vla-ros``: the command line for pip users (and handy on a full ROS 2 install too).

Commands:
vla-ros launch CONFIG [name:=value ...]   start a configuration (like ros2 launch)
vla-ros instruct "pick up the red cube"  publish the instruction (latched)
vla-ros policy NAME [--model-path P] [--params JSON]
                                         hot-swap the policy, wait until it loaded
vla-ros status [--json]                  print the inference node's PolicyStatus
vla-ros policies [--json]                list registered policies
vla-ros demo                             run the simulated end-to-end demo
"""

import argparse
import json
import sys
import time
from pathlib import Path

from vla_ros.dds import DISCOVERY_SETTLE_S


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
    from vla_ros import bringup
    from vla_ros.launcher import ProcessLauncher

    if args.show_args:
        try:
            print('\n'.join(bringup.describe_arguments(args.configuration)))
        except ValueError as exc:
            print(f'vla-ros launch: {exc}', file=sys.stderr)
            return 2
        return 0
    try:
        launcher = ProcessLauncher(args.configuration, _split_assignments(args.arguments))
    except ValueError as exc:
        print(f'vla-ros launch: {exc}', file=sys.stderr)
        return 2
    if args.print:
        for line in launcher.shell_lines():
            print(line)
        return 0
    for note in bringup.overridden_by_params_file(launcher.specs):
        print(f'[vla-ros launch] {note}', file=sys.stderr)
    return launcher.run_until_interrupted()


class _RosSession:
    """rclpy init + one node, shut down on exit.

    rclpy's own signal handlers are not installed: Ctrl-C raises KeyboardInterrupt in
    the main thread, the node is destroyed here and :func:`main` exits with 130.
    """

    def __init__(self, name: str):
        import rclpy
        from rclpy.signals import SignalHandlerOptions

        self.rclpy = rclpy
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name)

    def __enter__(self):
        return self.node

    def __exit__(self, *exc):
        self.node.destroy_node()
        self.rclpy.try_shutdown()


# Nodes that record sessions: instruct waits until they matched, when the graph shows them.
RECORDER_NODES = ('vla_bag_recorder', 'rosbag2_recorder')


def instruction_delivered(now: float, joined: float, published: float, last_match: float,
                          linger: float) -> bool:
    """Whether ``instruct`` has stayed long enough (acknowledgements apart) to exit.

    ``linger`` after publishing, one second after the last new match, and
    DISCOVERY_SETTLE_S after joining the graph (all monotonic seconds).
    """
    return (now >= published + linger and now >= last_match + 1.0
            and now >= joined + DISCOVERY_SETTLE_S)


def _everyone_matched(pub, node, topic: str, wanted_nodes: set[str]) -> bool:
    """Every subscription the graph shows is matched, the wanted nodes among them."""
    infos = node.get_subscriptions_info_by_topic(topic)
    return (pub.get_subscription_count() >= max(len(infos), 1)
            and wanted_nodes <= {i.node_name for i in infos})


def cmd_instruct(args) -> int:
    """Publish the instruction (latched) once its subscribers are matched; stay until acked.

    Publishing after the inference node (``--node``) and any recorder the graph shows
    have matched gives them the sample at the same moment (a bag then dates it as the
    node saw it). It is transient local, so a subscriber that matches later still gets
    it while this process lives: it stays until every match acknowledged it, at least
    ``--linger`` seconds and one second after the last new match (discovering another
    process can take that long on a busy machine), and at least DISCOVERY_SETTLE_S after
    it joined the graph. ``--keep`` serves late joiners until Ctrl-C.
    """
    import os

    from rclpy.duration import Duration
    from std_msgs.msg import String

    from vla_ros.nodes import qos
    from vla_ros.status_hint import discovery_settings

    if not args.text.strip():
        print('vla-ros instruct: the instruction is empty', file=sys.stderr)
        return 2
    topic = _topic(args.namespace, 'instruction')
    with _RosSession('vla_instruct') as node:
        pub = node.create_publisher(String, topic, qos.INSTRUCTION)
        started = time.monotonic()
        matched, last_change = 0, started

        def wait(until: float, ready) -> None:
            nonlocal matched, last_change
            while time.monotonic() < until:
                now = time.monotonic()
                if pub.get_subscription_count() != matched:
                    matched, last_change = pub.get_subscription_count(), now
                recorders = {n for n in node.get_node_names() if n in RECORDER_NODES}
                if matched and now >= last_change + 0.5 and ready(now) and _everyone_matched(
                        pub, node, topic, {args.node} | recorders):
                    return
                time.sleep(0.05)

        wait(time.monotonic() + args.timeout, lambda now: True)
        pub.publish(String(data=args.text))
        published = time.monotonic()
        if matched:
            wait(published + max(args.linger, 5.0),
                 lambda now: instruction_delivered(now, started, published, last_change,
                                                   args.linger)
                 and pub.wait_for_all_acked(Duration(seconds=0.1)))
        subscribers = {i.node_name for i in node.get_subscriptions_info_by_topic(topic)}
        if not pub.get_subscription_count():
            print(f'vla-ros instruct: nothing subscribes to {topic} after {args.timeout:g} s '
                  f'(no inference node found; {discovery_settings(os.environ)}; '
                  f'--namespace must match the launch namespace)', file=sys.stderr)
            return 1
        if args.node not in subscribers:
            print(f'vla-ros instruct: warning: delivered to {sorted(subscribers)}, but no '
                  f'{args.node!r} subscribed within {args.timeout:g} s', file=sys.stderr)
        if args.keep:
            try:  # the announcement inside: a Ctrl-C right after it is still the normal stop
                print(f'serving {args.text!r} on {topic} until Ctrl-C', file=sys.stderr,
                      flush=True)
                while True:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                return 0  # the normal way to stop --keep
    return 0


def _subscribe_status(node, topic: str):
    """Subscribe to PolicyStatus; returns the list the messages are appended to."""
    from vla_ros_msgs.msg import PolicyStatus

    from vla_ros.nodes import qos

    received = []
    node.create_subscription(PolicyStatus, topic, received.append, qos.STATUS)
    return received


def cmd_policy(args) -> int:
    """Swap the policy: policy, model_path, policy_params, unnorm_key set atomically.

    Then wait until vla/status reports the new policy loaded (exit 0) or its load
    failed (exit 1 with the node's reason); ``--no-wait`` returns once accepted.
    """
    import rclpy
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.parameter import Parameter

    from vla_ros.policy_swap import SwapWatch, swap_parameters

    try:
        values = swap_parameters(args.name, args.model_path, args.params, args.unnorm_key)
    except ValueError as exc:
        print(f'vla-ros policy: {exc}', file=sys.stderr)
        return 2
    service = _topic(args.namespace, f'{args.node}/set_parameters_atomically')
    status_topic = _topic(args.namespace, 'vla/status')
    with _RosSession('vla_policy_cli') as node:
        received = _subscribe_status(node, status_topic)
        client = node.create_client(SetParametersAtomically, service)
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f'vla-ros policy: {service} not available (no inference node '
                  f'{args.node!r} in namespace {args.namespace or "/"!r})', file=sys.stderr)
            return 1
        request = SetParametersAtomically.Request(parameters=[
            Parameter(k, Parameter.Type.STRING, v).to_parameter_msg()
            for k, v in values.items()])
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done():
            print('vla-ros policy: no answer from the inference node', file=sys.stderr)
            return 1
        result = future.result().result
        if not result.successful:
            print(f'vla-ros policy: rejected: {result.reason}', file=sys.stderr)
            return 1
        if args.no_wait:
            print(f'policy {args.name!r} accepted; it loads in the background '
                  '(see vla-ros status)')
            return 0
        watch = SwapWatch(args.name, time.monotonic())
        received.clear()
        deadline = time.monotonic() + args.load_timeout
        outcome = None
        while outcome is None and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
            while received and outcome is None:
                m = received.pop(0)
                outcome = watch.observe(m.policy, m.state, m.message, time.monotonic())
    if outcome is None:
        print(f'vla-ros policy: {args.name!r} accepted but not reported loaded within '
              f'{args.load_timeout:g} s on {status_topic} (see vla-ros status)',
              file=sys.stderr)
        return 1
    if not outcome.ok:
        print(f'vla-ros policy: {args.name!r} did not load: {outcome.message}',
              file=sys.stderr)
        return 1
    print(f'policy {args.name!r} loaded; status: {outcome.message}')
    return 0


def cmd_status(args) -> int:
    """Print the next PolicyStatus message (or why none came)."""
    import os

    import rclpy

    from vla_ros.policy_swap import STATE_NAMES
    from vla_ros.status_hint import no_status_message

    topic = _topic(args.namespace, 'vla/status')
    start = time.monotonic()
    with _RosSession('vla_status_cli') as node:
        received = _subscribe_status(node, topic)
        deadline = start + args.timeout
        # Discovery of another process takes up to a few seconds (Fast DDS announces a
        # participant every 3 s after its first few announcements): without any
        # publisher after --discovery-timeout there is no inference node to wait for.
        give_up_alone = start + min(args.timeout, args.discovery_timeout)
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
            if time.monotonic() > give_up_alone and node.count_publishers(topic) == 0:
                break
        publishers = node.count_publishers(topic)
        elsewhere = sorted(t for t, _ in node.get_topic_names_and_types()
                           if t.endswith('/vla/status') and t != topic
                           and node.count_publishers(t))
    if not received:
        print(no_status_message(topic, publishers, time.monotonic() - start, elsewhere,
                                os.environ), file=sys.stderr)
        return 1
    m = received[0]
    report = {'policy': m.policy, 'state': STATE_NAMES.get(m.state, str(m.state)),
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
                       task_seed=args.task_seed, task_split=args.task_split,
                       after_success=None if args.after_success < 0 else args.after_success)
    print(json.dumps(summary, indent=2))
    return 0 if summary.get('success') else 1


def cmd_bench(args) -> int:
    """Run a benchmark and print its JSON object."""
    if args.output and not Path(args.output).resolve().parent.is_dir():
        # Said before a run of minutes, not after it.
        print(f'vla-ros bench: --output {args.output}: no such directory '
              f'{Path(args.output).resolve().parent}', file=sys.stderr)
        return 2
    if args.benchmark == 'pipeline' and args.real:
        from vla_ros.benchmarking.pipeline_real import main as run_real

        return run_real(['--phase', str(args.phase)]
                        + (['--output', args.output] if args.output else []))
    if args.benchmark == 'pipeline':
        from vla_ros.benchmarking.pipeline import run

        _report(run(args.latency, args.duration), args.output)
        return 0
    from vla_ros.reliability.cli import run_bench_faults

    result = run_bench_faults(args)
    _report(result, args.output)
    return 0 if result.get('passed') else 1


def _report(result: dict, output: str | None) -> None:
    """Print a benchmark's JSON object and, with ``--output``, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        Path(output).write_text(text + '\n')


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vla-ros``."""
    parser = argparse.ArgumentParser(prog='vla-ros', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    from vla_ros.bringup import help_text

    p = sub.add_parser('launch', help='start a configuration (as ros2 launch would)',
                       description='Start the driver and inference nodes of a '
                       'configuration; every value is converted to its parameter\'s type '
                       'and checked before any node starts.', epilog=help_text(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('configuration', help='vla (robot:=... policy:=...) or a shortcut, e.g. '
                   'sim_arm, openvla_arm, rt1_mobile (listed below)')
    p.add_argument('arguments', nargs='*', help='name:=value launch arguments (listed below)')
    p.add_argument('--print', action='store_true',
                   help='print the node commands (shell-quoted) instead of starting them')
    p.add_argument('--show-args', action='store_true',
                   help="list the configuration's arguments with its defaults")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser('instruct', help='publish an instruction (latched)')
    p.add_argument('text')
    p.add_argument('--namespace', default='')
    p.add_argument('--timeout', type=float, default=10.0,
                   help='seconds to wait for a subscriber (the inference node)')
    p.add_argument('--node', default='vla_inference',
                   help='the inference node to wait for (its name, without namespace)')
    p.add_argument('--linger', type=float, default=1.0,
                   help='stay at least this long after publishing, so subscribers that '
                        'appear meanwhile still receive the latched sample')
    p.add_argument('--keep', action='store_true',
                   help='keep serving the latched instruction to late joiners until Ctrl-C')
    p.set_defaults(func=cmd_instruct)

    p = sub.add_parser(
        'policy', help='swap the running policy and wait until it loaded',
        description='Set policy, model_path, policy_params and unnorm_key together (one '
                    "atomic parameter change); an option left out means the new family's "
                    'default, never the previous policy\'s value. Exits 0 once vla/status '
                    'reports the new policy loaded, 1 with the reason if the node refused '
                    'it or the load failed.')
    p.add_argument('name', help='registry name (vla-ros policies lists them)')
    p.add_argument('--model-path', default='', help="checkpoint (default: none, the "
                   "family's default model)")
    p.add_argument('--params', default='', help='constructor arguments, a JSON object '
                   "(default: none, the family's defaults)")
    p.add_argument('--unnorm-key', default='', help='normalization statistics key')
    p.add_argument('--namespace', default='')
    p.add_argument('--node', default='vla_inference')
    p.add_argument('--timeout', type=float, default=10.0,
                   help='seconds to wait for the node to answer')
    p.add_argument('--load-timeout', type=float, default=120.0,
                   help='seconds to wait for the load to finish')
    p.add_argument('--no-wait', action='store_true',
                   help='return once the node accepted the change')
    p.set_defaults(func=cmd_policy)

    p = sub.add_parser('status', help="print the inference node's status")
    p.add_argument('--namespace', default='')
    p.add_argument('--json', action='store_true')
    p.add_argument('--timeout', type=float, default=10.0,
                   help='seconds to wait for a status message')
    p.add_argument('--discovery-timeout', type=float, default=5.0,
                   help='give up after this many seconds if nothing publishes vla/status '
                        '(discovering another process takes up to ~3 s on a busy machine)')
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
    p.add_argument('--output', help='also write the JSON to this file')
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
    p.add_argument('--after-success', type=float, default=1.0, metavar='SEC',
                   help='with --task: stop this long after the first success; negative: '
                        'run the whole --duration (task_success_at_end then means the '
                        'end of the run, as in vla-ros eval)')
    p.add_argument('arguments', nargs='*', help='name:=value launch arguments')
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    """Entry point of ``vla-ros``."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print('', file=sys.stderr)  # after the terminal's ^C
        return 130


if __name__ == '__main__':
    sys.exit(main())
