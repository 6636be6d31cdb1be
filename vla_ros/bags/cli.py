"""``vla-ros bag ...``: record, info, replay, regress, to-dataset, reindex, golden.

Wire into the main CLI with ``add_bag_parser(subparsers)``; ``python -m vla_ros.bags.cli``
runs it standalone. Exit codes: 0 success, 1 regression / failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading


def _stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C / SIGTERM, so the bag is closed cleanly."""
    stop = threading.Event()

    def handler(signum, _frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


def _log(text: str) -> None:
    print(f'[vla-ros bag] {text}', file=sys.stderr, flush=True)


def _size(text: str) -> int:
    units = {'k': 1e3, 'm': 1e6, 'g': 1e9}
    text = text.strip().lower().removesuffix('b')
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def cmd_record(args) -> int:
    """Record until Ctrl-C or --duration."""
    from vla_ros.bags.recorder import TopicSelection, record

    if args.topics or args.regex or args.all:
        selection = TopicSelection(tuple(args.topics), tuple(args.regex), args.all,
                                   tuple(args.exclude), args.namespace)
    else:
        selection = TopicSelection.vla_default(args.namespace)
    stop = _stop_on_signals()
    try:
        summary = record(args.output, selection, duration=args.duration, stop_event=stop,
                         log=_log, storage=args.storage, version=args.metadata_version,
                         max_file_bytes=_size(args.max_bag_size) if args.max_bag_size else 0,
                         max_file_duration=args.max_bag_duration or 0.0,
                         flush_interval=args.flush_interval, queue_depth=args.queue_depth,
                         parameters_node=None if args.no_parameters else args.inference_node,
                         compress=args.compress)
    except (ValueError, OSError) as exc:
        print(f'vla-ros bag record: {exc}', file=sys.stderr)
        return 2
    print(json.dumps(summary.__dict__, indent=2))
    return 0


def cmd_info(args) -> int:
    """Print what a bag holds."""
    from vla_ros.bags.info import bag_info, format_info
    from vla_ros.bags.reader import BagError, BagReader

    try:
        with BagReader(args.bag) as reader:
            info = bag_info(reader)
    except BagError as exc:
        print(f'vla-ros bag info: {exc}', file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _remaps(items) -> dict[str, str]:
    out = {}
    for item in items or []:
        if ':=' not in item:
            raise ValueError(f'remap must be /from:=/to, got {item!r}')
        src, dst = item.split(':=', 1)
        out[src] = dst
    return out


def cmd_replay(args) -> int:
    """Republish a bag."""
    from vla_ros.bags.player import PlayOptions, replay
    from vla_ros.bags.reader import BagError

    try:
        options = PlayOptions(
            rate=args.rate, topics=tuple(args.topics) if args.topics else None,
            remap=_remaps(args.remap), loop=args.loop, start_offset=args.start_offset,
            queue_depth=args.queue_depth, reliable=not args.best_effort,
            validate=not args.no_validate, wait_for_subscribers=args.wait_for_subscribers,
            progress=args.progress if args.progress is not None else sys.stderr.isatty())
    except ValueError as exc:
        print(f'vla-ros bag replay: {exc}', file=sys.stderr)
        return 2
    stop = _stop_on_signals()
    try:
        summary = replay(args.bag, options, stop, log=_log)
    except BagError as exc:
        print(f'vla-ros bag replay: {exc}', file=sys.stderr)
        return 2
    report = {**summary.__dict__, 'total_published': summary.total_published}
    print(json.dumps(report, indent=2))
    return 0 if summary.total_published else 1


def cmd_regress(args) -> int:
    """Lock-step regression against the recorded commands."""
    from vla_ros.bags.reader import BagError
    from vla_ros.bags.regress import RegressionError, parse_assignment, run_regression
    from vla_ros.bags.report import write_report

    try:
        overrides = dict(parse_assignment(p) for p in args.param or [])
        policy_params = json.loads(args.policy_params) if args.policy_params else None
        if policy_params is not None and not isinstance(policy_params, dict):
            raise RegressionError('--policy-params must be a JSON object')
        result = run_regression(
            args.bag, tolerance=args.tolerance, schedule=args.schedule,
            virtual_latency=args.virtual_latency, namespace=args.namespace,
            configuration=args.config, params_files=tuple(args.params_file or ()),
            overrides=overrides, policy=args.policy, policy_params=policy_params)
    except (RegressionError, BagError, json.JSONDecodeError) as exc:
        print(f'vla-ros bag regress: {exc}', file=sys.stderr)
        return 2
    paths = write_report(result, args.output)
    for dim in result.dimensions:
        flag = 'ok  ' if dim.passed else 'FAIL'
        print(f'{flag} {dim.name:8s} max|err| {dim.max_abs_error:.3g} (tol {dim.tolerance:.3g})'
              f'  over: {dim.exceed}  presence mismatches: {dim.presence_mismatch}')
    verdict = 'PASSED' if result.passed else 'REGRESSION'
    print(f'{verdict}: {result.ticks} ticks, {result.chunks_replayed} chunks replayed '
          f'({result.schedule} schedule); report: {paths["markdown"]}')
    return 0 if result.passed else 1


def cmd_to_dataset(args) -> int:
    """Convert recorded sessions to training episodes."""
    from vla_ros.bags.dataset import bags_to_dataset
    from vla_ros.bags.reader import BagError

    try:
        dataset, notes = bags_to_dataset(args.bags, action_space=args.action_space,
                                         cameras=tuple(args.camera) if args.camera else None,
                                         namespace=args.namespace,
                                         drop_idle=not args.keep_idle,
                                         image_size=tuple(args.image_size)
                                         if args.image_size else None)
    except (BagError, ValueError) as exc:
        print(f'vla-ros bag to-dataset: {exc}', file=sys.stderr)
        return 2
    dataset.save(args.output)
    for note in notes:
        _log(note)
    print(json.dumps({'output': args.output, 'episodes': len(dataset),
                      'steps': dataset.num_steps, 'action_space': dataset.action_space,
                      'control_period': dataset.control_period}, indent=2))
    return 0


def cmd_reindex(args) -> int:
    """Repair a bag in place after an interrupted recording."""
    from vla_ros.bags.reader import BagError
    from vla_ros.bags.reindex import reindex

    try:
        report = reindex(args.bag)
    except BagError as exc:
        print(f'vla-ros bag reindex: {exc}', file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def cmd_golden(args) -> int:
    """Record the golden bags from the simulated robot."""
    from vla_ros.bags.golden import GOLDEN, make_golden

    names = args.names or sorted(GOLDEN)
    for name in names:
        if name not in GOLDEN:
            print(f'vla-ros bag golden: unknown golden bag {name!r}; known: {sorted(GOLDEN)}',
                  file=sys.stderr)
            return 2
    kwargs = {'output_dir': args.output_dir} if args.output_dir else {}
    results = {name: make_golden(name, log=_log, **kwargs) for name in names}
    print(json.dumps(results, indent=2))
    return 0 if all(r['regress_passed'] for r in results.values()) else 1


def add_bag_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``bag`` with its subcommands to an argparse subparsers object."""
    bag = subparsers.add_parser('bag', help='record, inspect, replay and regress rosbag2 bags')
    sub = bag.add_subparsers(dest='bag_command', required=True)

    p = sub.add_parser('record', help='record topics into a rosbag2 bag (Ctrl-C stops)')
    p.add_argument('topics', nargs='*', help='topic names (default: the VLA session topics)')
    p.add_argument('-o', '--output', required=True, help='bag directory to create')
    p.add_argument('-e', '--regex', action='append', default=[],
                   help='record topics matching this regular expression')
    p.add_argument('-a', '--all', action='store_true', help='record every topic')
    p.add_argument('-x', '--exclude', action='append', default=[],
                   help='regular expression of topics not to record')
    p.add_argument('--namespace', default='', help='robot namespace of relative names')
    p.add_argument('-s', '--storage', choices=['sqlite3', 'mcap'], default='sqlite3')
    p.add_argument('--compress', action='store_true',
                   help='zstd-compressed chunks (mcap storage)')
    p.add_argument('--metadata-version', type=int, choices=[5, 8, 9], default=9,
                   help='5: Humble, 8: Iron/Jazzy, 9: Kilted (default)')
    p.add_argument('-b', '--max-bag-size', help='split files at this size, e.g. 500M')
    p.add_argument('-d', '--max-bag-duration', type=float, help='split files every N s')
    p.add_argument('--duration', type=float, help='stop after N seconds')
    p.add_argument('--flush-interval', type=float, default=0.5,
                   help='seconds between flushes: at most this much is lost if killed')
    p.add_argument('--queue-depth', type=int, default=1000, help='subscription depth')
    p.add_argument('--inference-node', default='vla_inference',
                   help='node whose parameters are stored in the bag (for regress)')
    p.add_argument('--no-parameters', action='store_true',
                   help='do not store the inference node parameters')
    p.set_defaults(func=cmd_record)

    p = sub.add_parser('info', help='describe a bag (any rosbag2 bag)')
    p.add_argument('bag')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=cmd_info)

    p = sub.add_parser('replay', help='republish a bag with its original timing')
    p.add_argument('bag')
    p.add_argument('-r', '--rate', type=float, default=1.0, help='speed factor')
    p.add_argument('--topics', nargs='+', help='only these topics')
    p.add_argument('--remap', action='append', help='/from:=/to (repeatable)')
    p.add_argument('-l', '--loop', action='store_true')
    p.add_argument('--start-offset', type=float, default=0.0, help='skip the first N s')
    p.add_argument('--queue-depth', type=int, default=1000,
                   help='publisher history per topic (0 = keep all: block, never drop)')
    p.add_argument('--best-effort', action='store_true',
                   help='publish best effort where the recording was best effort')
    p.add_argument('--no-validate', action='store_true',
                   help='publish payloads without decoding them first')
    p.add_argument('--wait-for-subscribers', type=float, default=0.0,
                   help='wait up to N s for a subscriber on every topic')
    p.add_argument('--progress', action=argparse.BooleanOptionalAction, default=None,
                   help='progress bar (default: when stderr is a terminal)')
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser('regress', help='lock-step replay through the inference engine and '
                                       'compare with the recorded commands')
    p.add_argument('bag')
    p.add_argument('--config', help='shipped configuration whose parameter files to apply '
                                    '(e.g. sim_arm)')
    p.add_argument('--params-file', action='append', help='ROS 2 parameter file to apply')
    p.add_argument('-p', '--param', action='append', help='name:=value override')
    p.add_argument('--policy', help='policy registry name to test')
    p.add_argument('--policy-params', help='JSON object merged into policy_params')
    p.add_argument('--tolerance', help="absolute, e.g. '1e-4' or 'vx=0.01,gripper=0.1' "
                                       '(default 1e-6)')
    p.add_argument('--schedule', choices=['auto', 'recorded', 'engine'], default='auto',
                   help='recorded: chunks at recorded times; engine: engine scheduling '
                        'with --virtual-latency; auto: recorded when the bag has chunks')
    p.add_argument('--virtual-latency', type=float, default=0.1,
                   help='inference latency for the engine schedule (s)')
    p.add_argument('--namespace', help='robot namespace in the bag (default: detected)')
    p.add_argument('-o', '--output', default='regress_report', help='report directory')
    p.set_defaults(func=cmd_regress)

    p = sub.add_parser('to-dataset', help='recorded sessions -> training episodes (.npz)')
    p.add_argument('bags', nargs='+')
    p.add_argument('-o', '--output', required=True, help='dataset directory')
    p.add_argument('--action-space', default='arm7')
    p.add_argument('--camera', action='append', help='cameras to keep (default: all)')
    p.add_argument('--namespace', help='robot namespace in the bag (default: detected)')
    p.add_argument('--image-size', type=int, nargs=2, metavar=('W', 'H'),
                   help='resize frames')
    p.add_argument('--keep-idle', action='store_true',
                   help='keep all-zero commands at the start and end of episodes')
    p.set_defaults(func=cmd_to_dataset)

    p = sub.add_parser('reindex', help='repair a bag after a killed recording (in place)')
    p.add_argument('bag')
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser('golden', help='re-record the golden bags from the simulated robot')
    p.add_argument('names', nargs='*', help='golden bags to make (default: all)')
    p.add_argument('--output-dir', help='default: test/golden of the source tree')
    p.set_defaults(func=cmd_golden)
    return bag


def main(argv=None) -> int:
    """Standalone entry point (``python -m vla_ros.bags.cli record ...``)."""
    parser = argparse.ArgumentParser(prog='vla-ros')
    add_bag_parser(parser.add_subparsers(dest='command', required=True))
    args = parser.parse_args(['bag', *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
