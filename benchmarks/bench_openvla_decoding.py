"""OpenVLA action decoding: the constrained KV-cache greedy loop vs ``model.generate``.

For each model size (random weights, same image and prompt for every method) it measures,
after warm-up, the median latency of decoding the 7 action tokens with
``greedy_action_tokens`` (one prefill + 6 cached single-token steps, output head on the
256 action rows only), with ``model.generate(max_new_tokens=7, do_sample=False)`` and with
``generate`` restricted to the action ids by a logits processor (the tokens that must equal
ours). Methods are interleaved round by round so that load from other processes hits all
of them alike. Prints one JSON object.

    .venv/bin/python benchmarks/bench_openvla_decoding.py [--runs 30] [--threads 1]
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')


def _measure(policy, runs: int, warmup: int) -> dict:
    import torch

    from vla_ros.policies.contract import Observation
    from vla_ros.policies.openvla.decoding import (
        ActionTokenLogitsProcessor,
        greedy_action_tokens,
    )

    model = policy.model
    obs = Observation.make_example(policy.spec, instruction='put the carrot on the plate')
    ids, pixels = policy.model_inputs(obs)
    mask = torch.ones_like(ids)
    token_range = policy.config.action_token_range
    n = policy.num_action_tokens
    methods = {
        'constrained_decoder': lambda: greedy_action_tokens(model, ids, pixels, n, token_range),
        'generate': lambda: model.generate(input_ids=ids, attention_mask=mask,
                                           pixel_values=pixels, max_new_tokens=n,
                                           do_sample=False)[:, ids.shape[1]:],
        'generate_action_mask': lambda: model.generate(
            input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=n,
            do_sample=False,
            logits_processor=[ActionTokenLogitsProcessor(*token_range)])[:, ids.shape[1]:],
        'predict_chunk': lambda: policy.predict_chunk(obs),
    }
    times = {name: [] for name in methods}
    outputs = {}
    with torch.inference_mode():
        for round_ in range(warmup + runs):
            for name, run in methods.items():
                start = time.perf_counter()
                outputs[name] = run()
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {
        'parameters': policy.num_parameters(),
        'prompt_tokens': int(ids.shape[1]),
        'image_patches': policy.config.num_patches,
        'median_ms': {k: round(v, 2) for k, v in median.items()},
        'min_ms': {k: round(min(t) * 1e3, 2) for k, t in times.items()},
        'ratio_decoder_over_generate': round(median['constrained_decoder'] / median['generate'],
                                             3),
        'ratio_decoder_over_generate_action_mask': round(
            median['constrained_decoder'] / median['generate_action_mask'], 3),
        'generate_new_tokens': int(outputs['generate'].shape[1]),
        'tokens_equal_masked_generate': bool(torch.equal(outputs['constrained_decoder'],
                                                         outputs['generate_action_mask'])),
    }


def main(argv=None) -> int:
    """Run the measurement and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=30, help='timed rounds (>= 20)')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1,
                        help='torch intra-op threads (1: the 2 shared cores are contended)')
    parser.add_argument('--sizes', default='tiny,medium')
    args = parser.parse_args(argv)
    if args.runs < 20:
        parser.error('--runs must be >= 20')

    import torch

    from vla_ros.policies.registry import make_policy

    torch.set_num_threads(args.threads)
    result = {'benchmark': 'openvla_decoding', 'runs': args.runs, 'warmup': args.warmup,
              'threads': args.threads, 'torch': torch.__version__, 'dtype': 'float32',
              'sizes': {}}
    for size in args.sizes.split(','):
        policy = make_policy('openvla', size=size, seed=0)
        result['sizes'][size] = _measure(policy, args.runs, args.warmup)
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
