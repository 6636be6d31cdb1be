"""``vla-ros eval`` and ``vla-ros collect``: closed-loop evaluation and expert demonstrations.

The main CLI wires them in with :func:`add_eval_parser` / :func:`add_collect_parser`; this
module also runs on its own: ``python -m vla_ros.evaluation.cli eval --policy expert``.

vla-ros eval --policy NAME [--model-path P] [--policy-params JSON] --episodes N --seed S
             [--tasks reach push pick_up] [--split test] [--strategy receding_horizon]
             [--strategy-params JSON] [--replan-every N | --inference-rate HZ]
             [--low-queue-depth N] [--chunk-timing observation|arrival]
             [--node-params YAML] [--latency SEC] [--json] [--contact-sheet PNG]
             [--stop-at-success] [--gripper-mode binary [--gripper-close-threshold C]
             [--gripper-open-threshold O] [--gripper-min-dwell S]]

Chunks are scheduled by the inference node's own engine (lock-step in sim time), so
``--node-params config/policies/openvla.yaml`` measures exactly what that launch runs;
the gripper filter (``gripper_mode``) and the hold after the policy says done are the
engine's too.
vla-ros collect --task all --episodes N --seed S --output DIR [--image-size 64]
                [--stop-at-success]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from vla_ros.policies.contract import PolicyLoadError

EXPERT = 'expert'


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f'not valid JSON ({exc}): {text!r}') from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object, got {text!r}')
    return value


def _size_arg(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split('x')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'image size must be N or WxH, got {text!r}') from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 8 or max(parts) > 1024:
        raise argparse.ArgumentTypeError(f'image size must be N or WxH in 8..1024, got {text!r}')
    return parts[0], parts[1]


def _tasks(names: list[str]) -> list[str]:
    from vla_ros.sim.tasks import task_names

    if not names or 'all' in names:
        return list(task_names())
    unknown = [n for n in names if n not in task_names()]
    if unknown:
        raise SystemExit(f'unknown task(s) {unknown}; choose from {list(task_names())} or all')
    return list(dict.fromkeys(names))


def make_eval_policy(name: str, model_path: str | None = None, params: dict | None = None):
    """The scripted expert for ``expert``, else a registry policy (``model_path`` passed on)."""
    params = dict(params or {})
    if name == EXPERT:
        if model_path:
            raise SystemExit('the expert has no model; drop --model-path')
        from vla_ros.sim.expert import ScriptedExpert

        return ScriptedExpert(**params)
    from vla_ros.policies.registry import make_policy

    if model_path:
        params['model_path'] = model_path
    return make_policy(name, **params)


def _pick_for_sheet(results, limit: int):
    """Up to ``limit`` episodes, taking the tasks in turn so each one shows."""
    by_task = {}
    for r in results:
        by_task.setdefault(r.task, []).append(r)
    picked, queues = [], [list(v) for v in by_task.values()]
    while len(picked) < limit and any(queues):
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop(0))
    return picked


def node_engine_config(path: str):
    """The engine configuration the inference node builds from a parameter file."""
    from vla_ros.bags.regress import default_parameters, parameters_from_file
    from vla_ros.inference_config import engine_config

    params = default_parameters()
    params.update(parameters_from_file(path))
    return engine_config(params)


def _engine_config(args, spec):
    """The engine schedule of ``vla-ros eval``: the node's file, or the schedule flags."""
    from vla_ros.evaluation.rollout import eval_engine_config

    flags = {'--strategy': args.strategy, '--strategy-params': args.strategy_params or None,
             '--replan-every': args.replan_every, '--inference-rate': args.inference_rate,
             '--low-queue-depth': args.low_queue_depth, '--chunk-timing': args.chunk_timing}
    if args.node_params:
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise ValueError(f'--node-params sets the schedule; drop {", ".join(given)}')
        config = node_engine_config(args.node_params)
        if abs(config.control_period - spec.control_period) > 1e-9:
            print(f'vla-ros eval: note: control_rate_hz {config.control_rate_hz} of '
                  f'{args.node_params} sets the sim tick, not the policy\'s period '
                  f'{spec.control_period} s', file=sys.stderr)
        return config
    return eval_engine_config(
        spec, strategy=args.strategy or 'receding_horizon',
        strategy_params=args.strategy_params, replan_every=args.replan_every,
        inference_rate_hz=args.inference_rate, low_queue_depth=args.low_queue_depth or 0,
        chunk_timing=args.chunk_timing or 'observation')


def cmd_eval(args) -> int:
    """Evaluate a policy closed loop on the sim tasks and report success rates."""
    os.environ.setdefault('MUJOCO_GL', 'egl')
    from vla_ros.evaluation.report import contact_sheet, summarize
    from vla_ros.evaluation.rollout import run_episodes

    tasks = _tasks(args.tasks)
    try:
        policy = make_eval_policy(args.policy, args.model_path, args.policy_params)
    except (ValueError, TypeError, PolicyLoadError) as exc:
        print(f'vla-ros eval: cannot make policy {args.policy!r}: {exc}', file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        try:
            engine = _engine_config(args, policy.spec)
        except (ValueError, OSError) as exc:
            print(f'vla-ros eval: bad schedule: {exc}', file=sys.stderr)
            return 2
        try:
            engine = _with_gripper(args, engine)
        except ValueError as exc:
            print(f'vla-ros eval: bad gripper settings: {exc}', file=sys.stderr)
            return 2
        results = run_episodes(
            policy, tasks, args.episodes, seed=args.seed, split=args.split,
            progress=not args.no_progress, engine_config=engine,
            inference_latency=args.latency,
            frame_size=(128, 128) if args.contact_sheet else None,
            until_horizon=not args.stop_at_success)
    finally:
        policy.close()
    report = summarize(results, time.perf_counter() - started)
    schedule = {name: getattr(engine, name) for name in (
        'control_rate_hz', 'inference_rate_hz', 'low_queue_depth', 'chunk_timing',
        'stale_image_timeout', 'inference_timeout')}
    report = {'policy': args.policy, 'model_path': args.model_path,
              'policy_params': args.policy_params, 'split': args.split, 'seed': args.seed,
              'episodes_per_task': args.episodes, 'tasks': tasks,
              'strategy': engine.chunk_strategy, 'strategy_params': engine.strategy_params,
              'schedule': schedule, 'node_params': args.node_params,
              'inference_latency_s': args.latency,
              'chunk_length': policy.spec.chunk_length,
              'until_horizon': not args.stop_at_success,
              'gripper_filter': None if engine.gripper_mode == 'continuous'
              else vars(engine.gripper_filter_config),
              **report}
    if report['policy_errors']:
        print(f"vla-ros eval: the policy failed {report['policy_errors']} time(s) (the robot "
              f"held); first: {report['first_error']}", file=sys.stderr)
    if args.contact_sheet:
        path = contact_sheet(_pick_for_sheet(results, args.sheet_episodes), args.contact_sheet)
        report['contact_sheet'] = str(path)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0


def _with_gripper(args, config):
    """``config`` with the gripper flags that were given (the engine validates them)."""
    from dataclasses import replace

    given = {name: value for name, value in (
        ('gripper_mode', args.gripper_mode),
        ('gripper_close_threshold', args.gripper_close_threshold),
        ('gripper_open_threshold', args.gripper_open_threshold),
        ('gripper_min_dwell_s', args.gripper_min_dwell)) if value is not None}
    return replace(config, **given) if given else config


def _print_table(report: dict) -> None:
    schedule = report['schedule']
    print(f"policy {report['policy']}  split {report['split']}  strategy "
          f"{report['strategy']}  inference {schedule['inference_rate_hz']:.3g} Hz  "
          f"timing {schedule['chunk_timing']}  latency {report['inference_latency_s']} s")
    print(f"{'task':10s} {'episodes':>8s} {'success':>8s} {'at end':>7s} {'wrong obj':>9s} "
          f"{'length':>7s} {'chatter':>7s}")
    for task, row in report['per_task'].items():
        at_end = row['success_at_end_rate']
        print(f"{task:10s} {row['episodes']:8d} {row['success_rate']:8.2f} "
              f"{at_end if at_end is not None else float('nan'):7.2f} "
              f"{row['wrong_object_rate']:9.2f} {row['mean_episode_length']:7.1f} "
              f"{row['gripper_chatter_events']:7d}")
    latency = report['mean_inference_latency_s']
    print(f"overall success {report['success_rate']:.3f}; mean inference "
          f"{latency * 1000 if latency is not None else float('nan'):.2f} ms; "
          f"{report.get('episodes_per_s', float('nan'))} episodes/s")
    if report.get('contact_sheet'):
        print(f"contact sheet: {report['contact_sheet']}")


def cmd_collect(args) -> int:
    """Record scripted-expert demonstrations into an EpisodeDataset directory."""
    os.environ.setdefault('MUJOCO_GL', 'egl')
    from vla_ros.evaluation.rollout import collect_demonstrations

    policy = None
    if args.policy is not None:
        try:
            policy = make_eval_policy(args.policy, args.model_path)
        except (ValueError, TypeError, PolicyLoadError) as exc:
            print(f'vla-ros collect: cannot make policy {args.policy!r}: {exc}',
                  file=sys.stderr)
            return 2
    try:
        summary = collect_demonstrations(
            args.output, _tasks(args.task), args.episodes, seed=args.seed, split=args.split,
            image_size=args.image_size, cameras=tuple(args.cameras),
            progress=not args.no_progress, action_noise=args.action_noise, policy=policy,
            expert_labels=policy is not None, until_horizon=not args.stop_at_success)
    except FileExistsError as exc:
        print(f'vla-ros collect: {exc}', file=sys.stderr)
        return 2
    finally:
        if policy is not None:
            policy.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for task, c in summary['tasks'].items():
            print(f"{task:10s} kept {c['kept']}/{c['attempted']} episodes ({c['steps']} steps, "
                  f"{c['succeeded']} succeeded, {c['succeeded_at_end']} still at the end)")
        print(f"{summary['kept']} episodes in {summary['output']} "
              f"({summary['episodes_per_s']} episodes/s)")
    return 0 if summary['kept'] else 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {text}')
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'must be in [0, 1], got {text}')
    return value


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``eval`` to a CLI's subparsers."""
    from vla_ros.actions.chunk_buffer import STRATEGIES
    from vla_ros.actions.gripper import GRIPPER_MODES
    from vla_ros.runtime.engine import CHUNK_TIMINGS
    from vla_ros.sim.tasks import SPLITS

    p = subparsers.add_parser('eval', help='closed-loop success rates on the sim tasks',
                              description=cmd_eval.__doc__)
    p.add_argument('--policy', required=True,
                   help=f'registered policy name, or {EXPERT!r} for the scripted expert')
    p.add_argument('--model-path', default=None, help='checkpoint passed to the policy')
    p.add_argument('--policy-params', type=_json_arg, default={},
                   help='JSON object of policy constructor arguments')
    p.add_argument('--episodes', type=_positive, default=50, help='episodes per task')
    p.add_argument('--seed', type=int, default=1000, help='first episode seed')
    p.add_argument('--tasks', nargs='+', default=['all'], help='reach push pick_up, or all')
    p.add_argument('--split', choices=SPLITS, default='test',
                   help='test: held-out paraphrases and layouts; train: training ones')
    p.add_argument('--strategy', choices=sorted(STRATEGIES), default=None,
                   help='chunk strategy (default receding_horizon)')
    p.add_argument('--strategy-params', type=_json_arg, default={},
                   help='JSON object, e.g. {"execute_steps": 4}')
    p.add_argument('--latency', type=_non_negative, default=0.0,
                   help='simulated inference latency in seconds of sim time')
    p.add_argument('--replan-every', type=_positive, default=None,
                   help='ticks between inferences (default: execute_steps for '
                        'receding_horizon, else 1)')
    p.add_argument('--inference-rate', type=_non_negative, default=None, metavar='HZ',
                   help='inference rate as the node\'s inference_rate_hz (instead of '
                        '--replan-every)')
    p.add_argument('--low-queue-depth', type=int, default=None, metavar='N',
                   help='also infer when at most N actions are left (node parameter; '
                        'default 0: only when starved)')
    p.add_argument('--chunk-timing', choices=CHUNK_TIMINGS, default=None,
                   help='node parameter chunk_timing (default observation)')
    p.add_argument('--node-params', default=None, metavar='YAML',
                   help='take the whole schedule (rates, strategy, timing, timeouts) from '
                        'an inference-node parameter file, e.g. config/policies/openvla.yaml')
    p.add_argument('--stop-at-success', action='store_true',
                   help='end an episode at its first success (default: run to the horizon '
                        'and report success at the end beside the first success)')
    p.add_argument('--gripper-mode', choices=GRIPPER_MODES, default=None,
                   help='the engine\'s gripper_mode (default continuous, or the value of '
                        '--node-params): binary = hysteresis + minimum dwell on the gripper '
                        'command, as the inference node applies it')
    p.add_argument('--gripper-close-threshold', type=_fraction, default=None,
                   help='binary mode: close at or below this opening (node parameter '
                        'gripper_close_threshold)')
    p.add_argument('--gripper-open-threshold', type=_fraction, default=None,
                   help='binary mode: open at or above this opening (gripper_open_threshold)')
    p.add_argument('--gripper-min-dwell', type=_non_negative, default=None, metavar='SEC',
                   help='binary mode: keep a gripper state at least this long '
                        '(gripper_min_dwell_s)')
    p.add_argument('--json', action='store_true', help='print the report as JSON')
    p.add_argument('--contact-sheet', default=None, metavar='PNG',
                   help='write first/last frames of episodes to this PNG')
    p.add_argument('--sheet-episodes', type=_positive, default=24,
                   help='at most this many episodes on the contact sheet')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=cmd_eval)
    return p


def add_collect_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``collect`` to a CLI's subparsers."""
    from vla_ros.sim.tasks import SPLITS

    p = subparsers.add_parser('collect', help='record expert demonstrations as a dataset',
                              description=cmd_collect.__doc__)
    p.add_argument('--task', nargs='+', default=['all'], help='reach push pick_up, or all')
    p.add_argument('--episodes', type=_positive, default=100, help='attempts per task')
    p.add_argument('--seed', type=int, default=0, help='first episode seed')
    p.add_argument('--output', required=True, help='dataset directory (new or empty)')
    p.add_argument('--image-size', type=_size_arg, default=(64, 64), help='N or WxH pixels')
    p.add_argument('--cameras', nargs='+', default=['front', 'wrist'],
                   choices=['front', 'wrist'])
    p.add_argument('--split', choices=SPLITS, default='train')
    p.add_argument('--action-noise', type=_fraction, default=0.0, metavar='MAX',
                   help='DART: execute the expert with noise of a per-episode scale drawn '
                        'from [0, MAX] x the action bounds; labels stay clean (default 0)')
    p.add_argument('--policy', default=None,
                   help='DAgger: this registered policy drives and the expert labels every '
                        'visited state; all episodes are kept (default: the expert drives)')
    p.add_argument('--model-path', default=None, help='checkpoint of --policy')
    p.add_argument('--stop-at-success', action='store_true',
                   help='end episodes at the first success (default: run to the horizon, '
                        'holding the object / staying at the target, with a per-frame '
                        'done label; expert episodes are kept if still achieved at the end)')
    p.add_argument('--json', action='store_true', help='print the summary as JSON')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=cmd_collect)
    return p


def main(argv=None) -> int:
    """Run ``eval`` or ``collect`` without the main CLI."""
    parser = argparse.ArgumentParser(prog='vla-ros', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    add_eval_parser(sub)
    add_collect_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
