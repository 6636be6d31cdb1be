"""The shipped policy's gripper outputs in pick-up rollouts, and what the binary filter does.

Runs ``--episodes`` pick-up episodes (train split, seeds ``--seed``..) of a policy to the
horizon (no stop at the first lift) twice: with the gripper command passed through
(``continuous``, today's behaviour) and with :class:`vla_ros.actions.gripper.GripperFilter`
in binary mode (``--close``/``--open`` thresholds, ``--dwell`` seconds). Prints one JSON
object:

- ``distribution``: the continuous run's commanded openings after the first close: a
  histogram over [0, 1] in tenths and the fraction within 0.1 / 0.2 of the 0.5 threshold.
- ``continuous`` / ``binary``: first success, success at the end of the horizon, gripper
  chatter events (a reversal of the thresholded command within 0.5 s after a grasp) and
  episodes with any.
- ``replay``: chatter left when the filter is replayed open loop on the continuous run's
  command traces, for a small grid of thresholds and dwell times (what the filter alone
  removes, without its effect on the closed loop).

Usage: python benchmarks/bench_gripper_hygiene.py [--episodes 10] [--seed 5000]
       [--model-path vla_ros/models/openvla_sim] [--close 0.3 --open 0.7 --dwell 0.5]
"""

import argparse
import json
import os
import sys
from dataclasses import replace

os.environ.setdefault('MUJOCO_GL', 'egl')

import numpy as np  # noqa: E402

from vla_ros.actions.gripper import (  # noqa: E402
    GripperFilter,
    GripperFilterConfig,
    chatter_events,
)
from vla_ros.evaluation.rollout import eval_engine_config, run_episodes  # noqa: E402
from vla_ros.policies.registry import make_policy  # noqa: E402


def _counts(results) -> dict:
    events = [chatter_events(r.gripper_commands, r.control_period) for r in results]
    return {'episodes': len(results), 'first_success': sum(r.success for r in results),
            'success_at_end': sum(r.success_at_end for r in results),
            'chatter_events': sum(len(e) for e in events),
            'episodes_with_chatter': sum(bool(e) for e in events),
            'per_episode': [{'seed': r.seed, 'first_success_step': r.first_success_step,
                             'success_at_end': r.success_at_end, 'chatter_at_s': e}
                            for r, e in zip(results, events, strict=True)]}


def _after_grasp(trace) -> list[float]:
    closed = [i for i, v in enumerate(trace) if v < 0.5]
    return list(trace[closed[0]:]) if closed else []


def _replay(traces, period, close, open_, dwell) -> int:
    total = 0
    for trace in traces:
        f = GripperFilter(GripperFilterConfig('binary', close, open_, dwell))
        total += len(chatter_events([f(v, i * period) for i, v in enumerate(trace)], period))
    return total


def main() -> int:
    """Run both modes and print the JSON report."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--policy', default='openvla')
    p.add_argument('--model-path', default='vla_ros/models/openvla_sim')
    p.add_argument('--episodes', type=int, default=10)
    p.add_argument('--seed', type=int, default=5000)
    p.add_argument('--close', type=float, default=GripperFilterConfig.close_threshold)
    p.add_argument('--open', type=float, default=GripperFilterConfig.open_threshold)
    p.add_argument('--dwell', type=float, default=GripperFilterConfig.min_dwell_s)
    args = p.parse_args()
    policy = make_policy(args.policy, model_path=args.model_path)
    plain_config = eval_engine_config(policy.spec)
    # The engine filters the gripper in its command path, as on the robot.
    binary_config = replace(plain_config, gripper_mode='binary',
                            gripper_close_threshold=args.close,
                            gripper_open_threshold=args.open, gripper_min_dwell_s=args.dwell)
    try:
        plain = run_episodes(policy, ['pick_up'], args.episodes, seed=args.seed, split='train',
                             until_horizon=True, engine_config=plain_config)
        binary = run_episodes(policy, ['pick_up'], args.episodes, seed=args.seed,
                              split='train', until_horizon=True, engine_config=binary_config)
    finally:
        policy.close()
    period = plain[0].control_period
    traces = [r.gripper_commands for r in plain]
    held = np.array([v for t in traces for v in _after_grasp(t)])
    hist, _ = np.histogram(held, bins=10, range=(0.0, 1.0))
    report = {
        'policy': args.policy, 'model_path': args.model_path, 'task': 'pick_up',
        'split': 'train', 'seed': args.seed, 'episodes': args.episodes,
        'filter': {'close_threshold': args.close, 'open_threshold': args.open,
                   'min_dwell_s': args.dwell},
        'distribution': {
            'ticks_after_first_close': int(held.size),
            'histogram_tenths': hist.tolist(),
            'within_0.1_of_0.5': round(float(np.mean(np.abs(held - 0.5) <= 0.1)), 4)
            if held.size else None,
            'within_0.2_of_0.5': round(float(np.mean(np.abs(held - 0.5) <= 0.2)), 4)
            if held.size else None},
        'continuous': _counts(plain),
        'binary': _counts(binary),
        'replay': [{'close': c, 'open': o, 'dwell_s': d,
                    'chatter_events': _replay(traces, period, c, o, d)}
                   for c, o in ((0.5, 0.5001), (0.4, 0.6), (0.3, 0.7), (0.2, 0.8))
                   for d in (0.0, 0.3, 0.5, 1.0)],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
