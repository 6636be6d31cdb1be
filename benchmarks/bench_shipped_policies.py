"""Closed-loop success of the shipped policies and the expert; chunk strategies compared.

Prints one JSON object:

- ``success``: for every policy (the shipped checkpoints in ``vla_ros/models/`` and the
  scripted expert) and both splits, ``--episodes`` episodes per task from seed ``--seed``:
  ``test`` = held-out layouts *and* held-out instruction paraphrases (unseen words such as
  'grab', 'block'); ``train`` = held-out seeds of the training layout stream with the
  training instruction templates (the shipped demonstrations use seeds 0..1499, so the
  default seeds 5000.. are new layouts). Per task: success rate, wrong-object rate, mean
  episode length.
- ``strategies``: each chunking policy (chunk_length > 1) on the test split, same seeds,
  executed by receding horizon (the whole chunk, then a new one), temporal ensembling
  (ACT, m = 0.01, a new chunk every tick the worker is free) and latency-aware merging
  (new_weight 0.7), at 0 s and at ``--latency`` s simulated inference latency.
- ``latency``: median / p90 wall time of one ``predict_chunk`` on one thread, over 50
  calls on rendered observations, and the control rate that allows.

Usage::

    python benchmarks/bench_shipped_policies.py [--episodes 50] [--seed 5000]
        [--tasks reach pick_up] [--sections success strategies latency]
        [--policies openvla_sim octo_sim expert] [--latency 0.2]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import numpy as np  # noqa: E402

from vla_ros.evaluation.report import summarize  # noqa: E402
from vla_ros.evaluation.rollout import make_sim, proprio_vector, run_episodes  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parents[1] / 'vla_ros' / 'models'
STRATEGIES = {
    'receding_horizon': {},  # execute the whole chunk, then switch (replan = chunk length)
    'temporal_ensemble': {'m': 0.01},
    'latency_aware': {'new_weight': 0.7},
}


def shipped_policies() -> dict[str, Path]:
    """Shipped checkpoint directories by name (``vla_ros/models/<name>/config.json``)."""
    return {p.parent.name: p.parent for p in sorted(MODELS_DIR.glob('*/config.json'))}


def load(name: str):
    """The expert, or a shipped checkpoint through the policy registry."""
    if name == 'expert':
        from vla_ros.sim.expert import ScriptedExpert

        return ScriptedExpert()
    from vla_ros.policies.registry import make_policy

    path = shipped_policies()[name]
    family = json.loads((path / 'config.json').read_text()).get('family') or name.split('_')[0]
    return make_policy(family, model_path=str(path))


def _compact(report: dict) -> dict:
    per_task = {
        task: {k: v[k] for k in ('episodes', 'successes', 'success_rate', 'wrong_object_rate',
                                 'mean_episode_length')}
        for task, v in report['per_task'].items()}
    return {'success_rate': report['success_rate'], 'per_task': per_task,
            'per_template': report['per_template'],
            'mean_inference_latency_s': report['mean_inference_latency_s'],
            'policy_errors': report['policy_errors'], 'wall_time_s': report['wall_time_s']}


def success_section(names, tasks, episodes, seed) -> dict:
    """Every policy on both splits (same seeds)."""
    out = {}
    for name in names:
        policy = load(name)
        try:
            out[name] = {'chunk_length': policy.spec.chunk_length}
            for split in ('test', 'train'):
                started = time.perf_counter()
                results = run_episodes(policy, tasks, episodes, seed=seed, split=split)
                out[name][split] = _compact(summarize(results, time.perf_counter() - started))
                print(f'{name} {split}: {out[name][split]["per_task"]}', file=sys.stderr)
        finally:
            policy.close()
    return out


def strategies_section(names, tasks, episodes, seed, latency) -> dict:
    """Chunking policies under each strategy, at 0 s and ``latency`` s (test split)."""
    out = {}
    for name in names:
        policy = load(name)
        try:
            if policy.spec.chunk_length < 2:
                continue
            runs = {}
            for strategy, params in STRATEGIES.items():
                for lat in (0.0, latency):
                    started = time.perf_counter()
                    results = run_episodes(policy, tasks, episodes, seed=seed, split='test',
                                           strategy=strategy, strategy_params=params,
                                           inference_latency=lat)
                    report = _compact(summarize(results, time.perf_counter() - started))
                    key = f'{strategy}@{lat:g}s'
                    runs[key] = {'strategy_params': params, 'inference_latency_s': lat,
                                 'success_rate': report['success_rate'],
                                 'per_task': report['per_task']}
                    print(f'{name} {key}: {report["per_task"]}', file=sys.stderr)
            out[name] = runs
        finally:
            policy.close()
    return out


def latency_section(names, calls: int = 50) -> dict:
    """Median predict_chunk wall time on one thread, on rendered observations."""
    import torch

    from vla_ros.policies.contract import Observation
    from vla_ros.sim.tasks import get_task

    torch.set_num_threads(1)
    out = {}
    for name in names:
        if name == 'expert':
            continue
        policy = load(name)
        sim = make_sim()
        try:
            spec = policy.spec
            instance = get_task('pick_up').sample(0, 'test')
            instance.reset(sim)
            times = []
            for i in range(calls + 3):
                obs = Observation({c: sim.render(c, size=spec.image_size)
                                   for c in spec.camera_names}, instance.instruction,
                                  stamp=0.1 * i,
                                  proprio=proprio_vector(sim) if spec.uses_proprio else None)
                t = time.perf_counter()
                policy.predict_chunk(obs)
                if i >= 3:  # warm-up calls excluded
                    times.append(time.perf_counter() - t)
            median = float(np.median(times))
            out[name] = {'calls': calls, 'median_s': round(median, 5),
                         'p90_s': round(float(np.percentile(times, 90)), 5),
                         'max_rate_hz': round(1.0 / median, 1),
                         'actions_per_call': spec.chunk_length,
                         'parameters': sum(p.numel() for p in policy.model.parameters())}
        finally:
            sim.close()
            policy.close()
    return out


def main(argv=None) -> int:
    """Run the selected sections and print one JSON object."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--episodes', type=int, default=50, help='episodes per task and split')
    p.add_argument('--seed', type=int, default=5000, help='first episode seed')
    p.add_argument('--tasks', nargs='+', default=['reach', 'pick_up'])
    p.add_argument('--policies', nargs='+', default=None,
                   help='shipped checkpoint names and/or expert (default: all + expert)')
    p.add_argument('--sections', nargs='+', default=['success', 'strategies', 'latency'],
                   choices=['success', 'strategies', 'latency'])
    p.add_argument('--latency', type=float, default=0.2,
                   help='simulated inference latency (s) for the strategy comparison')
    args = p.parse_args(argv)
    names = args.policies or [*shipped_policies(), 'expert']
    unknown = [n for n in names if n != 'expert' and n not in shipped_policies()]
    if unknown:
        p.error(f'unknown policies {unknown}; shipped: {list(shipped_policies())}')
    out = {'episodes_per_task': args.episodes, 'seed': args.seed, 'tasks': args.tasks,
           'policies': names}
    started = time.perf_counter()
    if 'latency' in args.sections:
        out['latency'] = latency_section(names)
    if 'success' in args.sections:
        out['success'] = success_section(names, args.tasks, args.episodes, args.seed)
    if 'strategies' in args.sections:
        out['strategies'] = strategies_section(names, args.tasks, args.episodes, args.seed,
                                               args.latency)
    out['wall_time_s'] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
