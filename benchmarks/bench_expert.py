"""Scripted-expert success on held-out episodes, and chunk strategies compared on the same seeds.

Prints one JSON object:

- ``expert``: the closed-loop expert (one action per chunk, replanning every 0.1 s tick) on
  ``--episodes`` test-split episodes per task: success rate, wrong-object rate, mean
  episode length, inference latency, episodes per second.
- ``strategies``: the expert as a *chunking* policy (``--chunk-length`` actions planned
  open loop on a kinematic model, so chunks go stale like a learned policy's) executed by
  receding horizon (``execute_steps`` = 4, a new chunk every 4 ticks), temporal ensembling
  (ACT, m = 0.01, a new chunk whenever the worker is free) and latency-aware merging
  (new_weight 0.7, likewise), each at 0 s and ``--latency`` s simulated inference latency.
  At that latency the expert runs twice: planning from the observed state, and with
  ``latency_compensation`` (its first rows repeat the previous chunk for the ticks the
  inference covers, real-time-chunking style). Same seeds, layouts and instructions in
  every configuration.

Usage: python benchmarks/bench_expert.py [--episodes 50] [--seed 1000] [--latency 0.3]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault('MUJOCO_GL', 'egl')

from vla_ros.evaluation.report import summarize  # noqa: E402
from vla_ros.evaluation.rollout import run_episodes  # noqa: E402
from vla_ros.sim.expert import ScriptedExpert  # noqa: E402
from vla_ros.sim.tasks import task_names  # noqa: E402

STRATEGIES = {
    'receding_horizon': {'execute_steps': 4},
    'temporal_ensemble': {'m': 0.01},
    'latency_aware': {'new_weight': 0.7},
}


def _run(policy, args, **kwargs) -> dict:
    started = time.perf_counter()
    results = run_episodes(policy, task_names(), args.episodes, seed=args.seed,
                           split=args.split, progress=args.progress, **kwargs)
    report = summarize(results, time.perf_counter() - started)
    keep = ('episodes', 'success_rate', 'wrong_object_rate', 'mean_episode_length',
            'mean_inference_latency_s', 'inference_calls', 'hold_ticks', 'wall_time_s',
            'episodes_per_s', 'per_task')
    out = {k: report[k] for k in keep}
    out['failures'] = [(f['task'], f['seed']) for f in report['failures']]
    return out, report


def main(argv=None) -> int:
    """Run the benchmark and print its JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--episodes', type=int, default=50, help='episodes per task')
    parser.add_argument('--seed', type=int, default=1000)
    parser.add_argument('--split', default='test')
    parser.add_argument('--chunk-length', type=int, default=8)
    parser.add_argument('--latency', type=float, default=0.3, help='simulated seconds')
    parser.add_argument('--no-strategies', action='store_true')
    parser.add_argument('--progress', action='store_true')
    args = parser.parse_args(argv)

    expert, full = _run(ScriptedExpert(), args)
    expert['per_template'] = full['per_template']
    expert['per_target'] = full['per_target']
    output = {'benchmark': 'expert', 'episodes_per_task': args.episodes, 'seed': args.seed,
              'split': args.split, 'control_period_s': 0.1, 'expert': expert}
    if not args.no_strategies:
        runs = []
        for latency in (0.0, args.latency):
            for compensation in ((0.0,) if latency == 0.0 else (0.0, latency)):
                policy = ScriptedExpert(chunk_length=args.chunk_length,
                                        latency_compensation=compensation)
                for name, params in STRATEGIES.items():
                    result, _ = _run(policy, args, strategy=name, strategy_params=params,
                                     inference_latency=latency)
                    runs.append({'strategy': name, 'strategy_params': params,
                                 'inference_latency_s': latency,
                                 'latency_compensation_s': compensation,
                                 'chunk_length': args.chunk_length, **result})
        output['strategies'] = runs
    print(json.dumps(output, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
