"""Each family at a given preset, built directly on the device: latency and memory.

For every family (OpenVLA, pi0, RT-2-style, Octo, RT-1) the policy is constructed inside
``torch.device(device)`` with bfloat16 as the default dtype, so its parameters are created
(and randomly initialised) on the device at their final dtype: no CPU copy, no float32
copy. Then, after warm-up, the median latency of ``predict_chunk`` at batch 1 and, for
OpenVLA, of the prefill (image patches + prompt) and of each single-token decode step at
batch 1 and ``--batch`` (several robots sharing one accelerator, identical prompts), the
peak memory, and a memory-bandwidth floor: the bytes of weights read for one decoded token
(the Llama decoder in bf16) divided by the device's bandwidth (``--bandwidth-gbs`` or the
table below for known GPUs). Families have no batched entry point, so batch N is measured
for OpenVLA's decoder only.

On CPU with ``--preset tiny`` this runs in seconds (test/test_bench_fullsize.py keeps it
from rotting). On a GPU, one command does everything and prints JSON:

    python benchmarks/bench_fullsize.py --device cuda:0 --preset full --batch 8 --runs 20

Results are saved to ``benchmarks/results/fullsize_<device name>.json`` unless --no-save.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

# pi0_style: the pi0 layout (PaliGemma-3B prefix + Gemma-300M expert) as a preset; the
# registry's `pi0` loads LeRobot checkpoints only, so it has no weights to build from.
FAMILIES = ('openvla', 'pi0_style', 'rt2', 'octo', 'rt1')
RESULTS = Path(__file__).resolve().parent / 'results'
# Peak memory bandwidth in GB/s of GPUs the floor is known for (vendor figures).
BANDWIDTH_GBS = {'H200': 4800, 'H100 SXM': 3350, 'H100 PCIe': 2000, 'H100': 3350,
                 'A100-SXM4-80GB': 2039, 'A100': 1555, 'L40S': 864, 'RTX 4090': 1008,
                 'RTX 6000 Ada': 960}


@contextlib.contextmanager
def default_dtype(dtype):
    """Create floating tensors in ``dtype`` inside the block."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_on_device(family: str, preset: str, device):
    """The family's policy, its parameters created on ``device`` in bfloat16."""
    import torch

    from vla_ros.policies.registry import make_policy

    with torch.device(device), default_dtype(torch.bfloat16):
        return make_policy(family, size=preset, device=str(device), dtype='bfloat16')


def _sync(device) -> None:
    import torch

    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _median_ms(fn, device, runs: int, warmup: int) -> float:
    times = []
    for index in range(warmup + runs):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def openvla_steps(policy, batch: int, device, runs: int, warmup: int) -> dict:
    """Median prefill and per-decode-step latency of the constrained greedy decoder."""
    import torch
    from transformers import DynamicCache

    from vla_ros.policies.contract import Observation

    model, lm = policy.model, policy.model.language_model
    obs = Observation.make_example(policy.spec, instruction='put the carrot on the plate')
    ids, pixels = policy.model_inputs(obs)
    ids, pixels = ids.repeat(batch, 1), pixels.repeat(batch, *[1] * (pixels.ndim - 1))
    first, stop = policy.config.action_token_range
    head = lm.get_output_embeddings().weight[first:stop]
    state = {}

    def prefill():
        state['cache'] = DynamicCache(config=lm.config)
        embeds = model.embed_inputs(ids, pixels)
        hidden = lm.model(inputs_embeds=embeds, cache=state['cache'],
                          use_cache=True).last_hidden_state
        state['token'] = (hidden[:, -1] @ head.T).argmax(-1) + first

    def decode_step():
        hidden = lm.model(input_ids=state['token'][:, None], cache=state['cache'],
                          use_cache=True).last_hidden_state
        state['token'] = (hidden[:, -1] @ head.T).argmax(-1) + first

    with torch.inference_mode():
        prefill_ms = _median_ms(prefill, device, runs, warmup)
        steps = []
        for _ in range(max(runs, 3)):  # each run: a fresh prefill, then the 6 decode steps
            prefill()
            for _ in range(policy.num_action_tokens - 1):
                steps.append(_median_ms(decode_step, device, 1, 0))
    decoder_params = sum(p.numel() for p in lm.model.layers.parameters()) \
        + lm.model.norm.weight.numel() + head.numel()
    return {'batch': batch, 'prefill_ms': prefill_ms,
            'decode_step_ms': statistics.median(steps),
            'prefill_tokens': int(ids.shape[1] + policy.config.num_inserted_tokens),
            'weight_bytes_per_decoded_token': decoder_params * 2}


def measure_family(family: str, preset: str, device, batch: int, runs: int,
                   warmup: int) -> dict:
    """Build, time predict_chunk (and OpenVLA's steps), report memory; then free it."""
    import torch

    from vla_ros.policies.contract import Observation

    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    policy = build_on_device(family, preset, device)
    _sync(device)
    build_s = time.perf_counter() - start
    params = list(policy.model.parameters())
    out = {'family': family, 'preset': preset, 'build_s': round(build_s, 3),
           'parameters': sum(p.numel() for p in params),
           'weight_bytes': sum(p.numel() * p.element_size() for p in params),
           'param_devices': sorted({str(p.device) for p in params}),
           'param_dtypes': sorted({str(p.dtype) for p in params})}
    obs = Observation.make_example(policy.spec, instruction='pick up the red cube')
    predict = policy.predict_chunk
    out['predict_chunk_ms_batch1'] = _median_ms(lambda: predict(obs), device, runs, warmup)
    # The policy is freed when this function returns (next family, empty cache).
    out['chunk_shape'] = list(policy.spec.chunk_shape)
    if family == 'openvla':
        out['decoder'] = [openvla_steps(policy, b, device, runs, warmup)
                          for b in sorted({1, batch})]
    if device.type == 'cuda':
        out['peak_device_bytes'] = torch.cuda.max_memory_allocated(device)
    else:
        out['peak_rss_bytes_so_far'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def device_bandwidth(device, given: float | None) -> tuple[str, float | None]:
    """The device's name and its memory bandwidth in GB/s (None if unknown)."""
    import torch

    if device.type != 'cuda':
        return platform.processor() or platform.machine(), given
    name = torch.cuda.get_device_name(device)
    if given:
        return name, given
    for key, value in BANDWIDTH_GBS.items():
        if key.lower() in name.lower():
            return name, float(value)
    return name, None


def main(argv=None) -> dict:
    """Measure every family; print (and save) the JSON report; return it."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--preset', default=None, help='default: full on a GPU, tiny on CPU')
    parser.add_argument('--families', default=','.join(FAMILIES))
    parser.add_argument('--batch', type=int, default=8, help='robots sharing the device')
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--bandwidth-gbs', type=float, default=None)
    parser.add_argument('--no-save', action='store_true')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    preset = args.preset or ('full' if device.type == 'cuda' else 'tiny')
    name, bandwidth = device_bandwidth(device, args.bandwidth_gbs)
    results = []
    for family in args.families.split(','):
        result = measure_family(family, preset, device, args.batch, args.runs, args.warmup)
        for step in result.get('decoder', []):
            if bandwidth:
                step['bandwidth_floor_ms_per_token'] = \
                    step['weight_bytes_per_decoded_token'] / (bandwidth * 1e9) * 1e3
        results.append(result)
    report = {'benchmark': 'fullsize', 'device': name, 'torch': torch.__version__,
              'bandwidth_gbs': bandwidth, 'preset': preset, 'runs': args.runs,
              'results': results}
    print(json.dumps(report, indent=2))
    if not args.no_save:
        slug = re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_').lower() or 'device'
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f'fullsize_{slug}_{preset}.json').write_text(json.dumps(report, indent=2)
                                                                 + '\n')
    return report


if __name__ == '__main__':
    main()
