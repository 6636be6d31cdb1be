"""``vla-ros bench faults``: the fuzz, fault and soak campaign as one JSON object.

Wire it into ``vla-ros`` with :func:`add_bench_faults_parser` (or run
``benchmarks/bench_faults.py``). Everything runs on this machine only: discovery is
limited to localhost, and the campaign uses its own domain (``--domain-id``, by default a
random one in 100..199, whatever ROS_DOMAIN_ID says) so that a robot graph running on this
machine never sees the fuzzed commands.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

TARGET_RULE = ('driver-detected faults: watchdog_timeout + one driver period; faults the '
               'inference node detects: detection timeout + one inference period + '
               'deceleration ramp (speed / max_linear_acceleration) + one driver period; '
               'joint_* faults (joint_position robot): the same without the ramp (a hold is '
               'the measured position), measured as the first target that stays put for '
               'two control periods')


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the fault benchmark."""
    parser.add_argument('--fuzz-examples', type=int, default=100,
                        help='hypothesis cases per fuzz target (default 100)')
    parser.add_argument('--fault-repeats', type=int, default=3,
                        help='rounds of the in-process faults (default 3)')
    parser.add_argument('--process-fault-repeats', type=int, default=1,
                        help='rounds of the process kills and restarts (default 1)')
    parser.add_argument('--soak-minutes', type=float, default=2.0,
                        help='soak duration after warm-up (default 2; the full soak is 10)')
    parser.add_argument('--stall-every', type=float, default=60.0,
                        help='seconds between injected inference stalls in the soak (0: none)')
    parser.add_argument('--camera-rate', type=float, default=30.0,
                        help='simulated camera rate in the soak [Hz] (default 30)')
    parser.add_argument('--bag-dir', default=None,
                        help='keep the soak bag here (default: a temporary directory, '
                             'deleted once counted: one 224 px camera at 30 Hz is ~4.5 MB/s)')
    parser.add_argument('--bag-storage', choices=['sqlite3', 'mcap'], default='sqlite3',
                        help='storage of the soak bag (default sqlite3)')
    parser.add_argument('--bag-cameras', nargs='*', default=['front'],
                        help='cameras recorded in the soak bag (default: front)')
    parser.add_argument('--no-bag', action='store_true',
                        help='do not record the soak (no published vs recorded check)')
    parser.add_argument('--skip', action='append', default=[],
                        choices=['fuzz', 'faults', 'joint-faults', 'process-faults', 'soak'],
                        help='leave a part out (repeatable)')
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS domain of the campaign (default: random in 100..199)')
    parser.add_argument('--json', action='store_true', help='(the output is always JSON)')
    return parser


def add_bench_faults_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``faults`` to a ``bench`` sub-command's subparsers; sets ``func``."""
    parser = subparsers.add_parser('faults', help='fuzz, fault and soak campaign (JSON)')
    add_arguments(parser)
    parser.set_defaults(func=lambda args: _print(run_bench_faults(args)))
    return parser


def _print(result: dict) -> int:
    print(json.dumps(result, indent=2))
    return 0 if result.get('passed') else 1


def isolated_env(domain_id: int | None = None) -> dict:
    """This process's environment, forced onto localhost discovery and a private domain."""
    if domain_id is None:
        domain_id = random.randint(100, 199)
    if not 1 <= domain_id <= 232:
        raise SystemExit(f'--domain-id must be in 1..232, got {domain_id}')
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = str(domain_id)
    os.environ['HF_HUB_OFFLINE'] = '1'
    os.environ['TRANSFORMERS_OFFLINE'] = '1'
    os.environ.setdefault('MUJOCO_GL', 'egl')
    os.environ['PYTHONUNBUFFERED'] = '1'
    return dict(os.environ)


def _fault_summary(results) -> dict:
    by_fault = {}
    for r in results:
        entry = by_fault.setdefault(r.fault, {
            'detected_by': r.detected_by, 'detect_timeout_s': r.detect_timeout_s,
            'stop_latency_s': [], 'target_s': [], 'within_target': [],
            'held_until_cleared': [], 'recovered': [], 'recovery_s': [], 'reason': r.reason,
            'notes': {k: v for k, v in r.notes.items() if k != 'logs'}})
        entry['stop_latency_s'].append(None if r.stop_latency_s is None
                                       else round(r.stop_latency_s, 4))
        entry['target_s'].append(None if r.target_s is None else round(r.target_s, 4))
        entry['within_target'].append(r.within_target)
        entry['held_until_cleared'].append(r.held_until_cleared)
        entry['recovered'].append(r.recovered)
        entry['recovery_s'].append(None if r.recovery_s is None else round(r.recovery_s, 3))
    for entry in by_fault.values():
        latencies = [v for v in entry['stop_latency_s'] if v is not None]
        entry['stop_latency_max_s'] = max(latencies) if latencies else None
    return by_fault


def run_bench_faults(args) -> dict:
    """Run the selected parts; return the JSON-ready result."""
    env = isolated_env(getattr(args, 'domain_id', None))
    import rclpy

    from vla_ros.reliability import campaign, campaign_joints, fuzz
    from vla_ros.reliability.soak import SoakConfig, run_soak
    from vla_ros.reliability.soak_bag import bag_recorder

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']))
    started = time.monotonic()
    result = {'benchmark': 'faults', 'ros_domain_id': int(env['ROS_DOMAIN_ID']),
              'discovery_range': env['ROS_AUTOMATIC_DISCOVERY_RANGE'],
              'watchdog_timeout_s': campaign.WATCHDOG_TIMEOUT,
              'driver_period_s': 1.0 / campaign.DRIVER_RATE_HZ,
              'inference_period_s': 1.0 / campaign.CONTROL_RATE_HZ,
              'target_rule': TARGET_RULE}
    unsafe = 0
    try:
        if 'fuzz' not in args.skip:
            fuzz_result = fuzz.run_fuzz(context, examples=args.fuzz_examples)
            unsafe += fuzz_result['unsafe_commands']
            result['fuzz'] = fuzz_result
        runs = []
        if 'faults' not in args.skip:
            runs.append(campaign.run_node_faults(context, repeats=args.fault_repeats))
        if 'joint-faults' not in args.skip:  # the same faults on a joint_position robot
            runs.append(campaign_joints.run_joint_node_faults(
                context, repeats=args.fault_repeats))
        if 'process-faults' not in args.skip:
            for _ in range(args.process_fault_repeats):
                runs.append(campaign.run_process_faults(context, env))
        faults = [r for run in runs for r in run.results]
        if faults:
            unsafe += sum(run.unsafe_commands for run in runs)
            result['fault_unsafe_commands'] = sum(run.unsafe_commands for run in runs)
            result['fault_applied_twists_checked'] = sum(
                run.applied_twists_checked for run in runs)
            result['faults'] = _fault_summary(faults)
            result['all_stops_within_target'] = all(
                r.within_target is not False for r in faults)
            result['all_recovered'] = all(r.recovered for r in faults)
        if 'soak' not in args.skip:
            config = SoakConfig(duration=args.soak_minutes * 60.0,
                                camera_rate_hz=args.camera_rate, stall_every=args.stall_every,
                                sample_period=max(1.0, min(10.0, args.soak_minutes * 2)))
            recorder = None if args.no_bag else bag_recorder(
                args.bag_dir, storage=args.bag_storage, keep=bool(args.bag_dir),
                cameras=tuple(f'camera/{c}/image_raw' for c in args.bag_cameras))
            soak = run_soak(context, env, config, recorder=recorder, progress=_progress)
            soak.pop('rss_samples', None)
            if not args.no_bag:
                soak['messages_published_vs_recorded'] = _published_vs_recorded(soak['bag'])
            unsafe += soak['unsafe_commands']
            result['soak'] = soak
    finally:
        rclpy.try_shutdown(context=context)
    result['unsafe_commands_total'] = unsafe
    result['wall_time_s'] = round(time.monotonic() - started, 1)
    result['passed'] = bool(
        unsafe == 0 and not result.get('fuzz', {}).get('failures')
        and result.get('all_stops_within_target', True) and result.get('all_recovered', True)
        and result.get('soak', {}).get('starved_ticks_unexplained', 0) == 0
        and result.get('soak', {}).get('rss_within_bound', True)
        and result.get('soak', {}).get('bag', {}).get('reliable_topics_match', True))
    return result


def _published_vs_recorded(bag: dict) -> dict:
    """One line per topic: ``published/received -> recorded`` from the soak's bag report."""
    lines = {t: {'published': c['published'], 'recorded': c['recorded']}
             for t, c in bag.get('published_vs_recorded', {}).items()}
    lines.update({t: {'received (best effort)': c['received'], 'recorded': c['recorded']}
                  for t, c in bag.get('cameras_received_vs_recorded', {}).items()})
    return lines


def _progress(elapsed, sample):
    print(f'[soak] {elapsed:7.1f} s  rss driver {sample[1]:.1f} MB  inference '
          f'{sample[2]:.1f} MB', file=sys.stderr, flush=True)


def main(argv=None) -> int:
    """Entry point of ``benchmarks/bench_faults.py``."""
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    return _print(run_bench_faults(parser.parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
