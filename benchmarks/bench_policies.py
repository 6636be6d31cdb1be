"""Per-policy CPU latency of one action chunk at the tiny size, with parameter counts.

For every registered policy (or those named with --policies): build the tiny preset,
run ``--warmup`` predictions, then time ``--repeats`` predictions of one fixed example
observation (the stamp advances by one control period per call, as in deployment, so
stochastic samplers draw fresh noise). Reports median / p90 / min latency per chunk and
per action, the tiny parameter count and the full preset's count (meta device). Prints
one JSON object.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from vla_ros.policies.contract import Observation
from vla_ros.policies.listing import policy_row
from vla_ros.policies.registry import available_policies, make_policy


def measure(name: str, warmup: int, repeats: int) -> dict:
    """Latency statistics and the table row of one policy."""
    t0 = time.perf_counter()
    policy = make_policy(name)
    build_s = time.perf_counter() - t0
    try:
        spec = policy.spec
        obs = Observation.make_example(spec, 'pick up the red cube', stamp=0.0)
        times = []
        for i in range(warmup + repeats):
            obs.stamp = i * spec.control_period
            start = time.perf_counter()
            chunk = policy.predict_chunk(obs)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        assert chunk.shape == spec.chunk_shape
        ms = np.array(times) * 1e3
        row = policy_row(name, policy=policy)
    finally:
        policy.close()
    return {
        'family': row['family'], 'action_head': row['action_head'],
        'chunk_length': spec.chunk_length, 'control_period_s': spec.control_period,
        'image_size': list(spec.image_size),
        'tiny_parameters': row['tiny_parameters'], 'full_parameters': row['full_parameters'],
        'build_s': round(build_s, 3),
        'latency_ms_median': round(float(np.median(ms)), 3),
        'latency_ms_p90': round(float(np.percentile(ms, 90)), 3),
        'latency_ms_min': round(float(ms.min()), 3),
        'latency_ms_per_action_median': round(float(np.median(ms)) / spec.chunk_length, 3),
        'repeats': repeats,
    }


def main(argv=None) -> int:
    """Print the benchmark's JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--policies', default='', help='comma-separated names (default: all)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--threads', type=int, default=0,
                        help='torch intra-op threads (default: torch default)')
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.repeats < 1:
        parser.error('--warmup must be >= 0 and --repeats >= 1')
    names = [n for n in args.policies.split(',') if n] or available_policies()
    unknown = sorted(set(names) - set(available_policies()))
    if unknown:
        parser.error(f'unknown policies {unknown}; available: {available_policies()}')
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in names:
        try:
            results[name] = measure(name, args.warmup, args.repeats)
        except Exception as exc:  # one broken family is reported, the others still run
            results[name] = {'error': f'{type(exc).__name__}: {exc}'}
    print(json.dumps({
        'benchmark': 'policy_latency_cpu_tiny',
        'machine': {'cpu_count': os.cpu_count(), 'processor': platform.processor(),
                    'python': platform.python_version(), 'torch': torch.__version__,
                    'torch_threads': torch.get_num_threads(),
                    'load_average_1min': round(os.getloadavg()[0], 2)},
        'warmup': args.warmup, 'repeats': args.repeats,
        'policies': results,
    }, indent=2))
    return 0 if all('error' not in r for r in results.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
