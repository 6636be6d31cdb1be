"""Loading a released-layout OpenVLA checkpoint: time and peak memory against its size.

The fixture has the real towers of ``openvla/openvla-7b`` (DINOv2 ViT-L/14 with 4 registers
and SigLIP SO400M/14 at 224 px, their timm tensor names and shapes) and the real projector
widths, but a small Llama (``--llm-hidden``, ``--llm-layers``) so that it is ~0.80 B
parameters, ~1.6 GB in bfloat16: written in the released layout (config.json from
``released_config``, sharded safetensors + index, tokenizer) into a temporary directory
with random bf16 values, and deleted afterwards. Each way of loading runs in a fresh child
process that reports its wall time and peak resident memory (VmHWM), also net of
what the process held before loading (torch + transformers imported):

* ``released_native_bf16``: ``OpenVlaPolicy.from_pretrained(dir, dtype='bfloat16')``, the
  native loader (meta-device model, tensors read one by one into their destination);
* ``own_format_bf16``: the same weights in this project's own save format (transformers
  ``save_pretrained`` layout, native names, sharded) through ``from_pretrained``;
* ``plain_fp32``: what loading without a meta device costs: a randomly initialised float32
  model, the shards read with ``safetensors.torch.load_file`` and ``load_state_dict``
  (the remote-code path's default with transformers 4.40; it cannot run here).

After loading, every parameter page is touched (``first_touch_s``): transformers leaves
same-dtype weights as views of the memory-mapped files, read when first used, so
``peak_rss_after_load_bytes`` alone would flatter it; ``peak_rss_bytes`` is after the touch.

Prints one JSON object and saves it to ``benchmarks/results/openvla_load.json``.
The files are in the page cache when each child reads them (just written), as on a robot
computer's second start; a cold first read adds the disk's read time to every method.

    python benchmarks/bench_openvla_load.py [--llm-hidden 512] [--llm-layers 4] [--no-save]
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('OMP_NUM_THREADS', '1')

RESULTS = Path(__file__).resolve().parent / 'results' / 'openvla_load.json'
SHARD_BYTES = 512 * 1024 ** 2
UNNORM_KEY = 'bench'

CHILD = r'''
import json, resource, sys, time
import torch, transformers  # noqa: F401  (imported before the baseline is taken)
from vla_ros.policies.openvla.policy import OpenVlaPolicy
from vla_ros.policies.openvla.modeling_openvla import OpenVlaForActionPrediction

mode, path = sys.argv[1], sys.argv[2]
def rss_peak():
    # VmHWM: this process's own peak (ru_maxrss would start at the parent's at fork).
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
baseline = rss_peak()
start = time.perf_counter()
if mode == 'released_native_bf16':
    policy = OpenVlaPolicy.from_pretrained(path, unnorm_key='bench', dtype='bfloat16')
    model = policy.model
elif mode == 'own_format_bf16':
    policy = OpenVlaPolicy.from_pretrained(path, unnorm_key='bench', dtype='bfloat16')
    model = policy.model
else:
    from pathlib import Path
    from safetensors.torch import load_file
    from vla_ros.policies.openvla.released_format import parse_released_config
    from vla_ros.policies.openvla.released_loader import plan_for
    from vla_ros.policies.openvla.weight_mapping import NATIVE_ONLY
    config = parse_released_config(json.loads((Path(path) / 'config.json').read_text())).config
    model = OpenVlaForActionPrediction(config)  # random float32 initialisation
    stored = {}
    for shard in sorted(Path(path).glob('model-*.safetensors')):
        stored.update(load_file(str(shard)))
    state = {}
    for mapping in plan_for(model):
        natives = mapping.to_native([stored.pop(n) for n in mapping.released])
        state.update(zip(mapping.native, natives))
    state.update({n: model.state_dict()[n] for n in NATIVE_ONLY})
    model.load_state_dict(state, strict=True)
    del stored, state
seconds = time.perf_counter() - start
peak_loaded = rss_peak()
# transformers may leave weights as views of the memory-mapped file, read on first use:
# touch every page of every parameter so that all methods end with the weights resident.
start = time.perf_counter()
with torch.no_grad():
    for p in model.parameters():
        flat = p.detach().reshape(-1)
        flat[::max(1, 4096 // flat.element_size())].float().sum()
touch_s = time.perf_counter() - start
params = sum(p.numel() for p in model.parameters())
dtypes = sorted({str(p.dtype) for p in model.parameters()})
print(json.dumps({'load_s': seconds, 'first_touch_s': touch_s,
                  'peak_rss_after_load_bytes': peak_loaded, 'peak_rss_bytes': rss_peak(),
                  'baseline_rss_bytes': baseline, 'parameters': params, 'dtypes': dtypes}))
'''


def fixture_config(hidden: int, layers: int) -> dict:
    """Released config.json of the fixture: real towers, a small Llama."""
    from vla_ros.policies.openvla.released_format import (
        parse_released_config,
        released_config,
    )

    text = {'model_type': 'llama', 'pad_token_id': 32000, 'torch_dtype': 'bfloat16',
            'vocab_size': 32064, 'hidden_size': hidden, 'intermediate_size': hidden * 11 // 4,
            'num_hidden_layers': layers, 'num_attention_heads': max(1, hidden // 64)}
    stats = {UNNORM_KEY: {'action': {
        'mean': [0.0] * 7, 'std': [1.0] * 7, 'min': [-1.0] * 7, 'max': [1.0] * 7,
        'q01': [-0.05] * 3 + [-0.25] * 3 + [0.0], 'q99': [0.05] * 3 + [0.25] * 3 + [1.0],
        'mask': [True] * 6 + [False]}}}
    seed = {'model_type': 'openvla', 'vision_backbone_id': 'dinosiglip-vit-so-224px',
            'llm_backbone_id': 'llama2-7b-pure', 'arch_specifier': 'no-align+fused-gelu-mlp',
            'image_resize_strategy': 'resize-naive', 'text_config': text, 'norm_stats': stats}
    native = parse_released_config(seed).config
    written = released_config(native, stats)  # the writer's config.json for it
    assert 'vla_ros_vision_towers' not in written  # real towers: the plain released fields
    return written


def write_fixtures(root: Path, hidden: int, layers: int) -> dict:
    """Released-layout and own-format directories of the same random bf16 weights."""
    import torch

    from vla_ros.actions.normalization import DatasetStatistics, save_statistics
    from vla_ros.policies.openvla.released_format import parse_released_config
    from vla_ros.policies.openvla.released_loader import build_on_meta, plan_for
    from vla_ros.policies.openvla.released_writer import _tokenizer_with_pad
    from vla_ros.policies.openvla.safetensors_io import (
        checkpoint_tensors,
        read_tensor,
        write_shards,
    )
    from vla_ros.policies.openvla.weight_mapping import NATIVE_ONLY, released_shapes
    from vla_ros.policies.tokenizer import load_text_tokenizer

    config = fixture_config(hidden, layers)
    native = parse_released_config(config).config
    meta_model = build_on_meta(native)
    native_shapes = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    plan = plan_for(meta_model)
    shapes = released_shapes(plan, native_shapes)
    gen = torch.Generator().manual_seed(0)

    def random_tensors():
        for name, shape in shapes.items():
            yield name, (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)

    released, own = root / 'released', root / 'own'
    if (own / 'config.json').is_file():  # --keep: already written
        return _describe(released, own, shapes, 0.0)
    start = time.perf_counter()
    write_shards(random_tensors(), released, SHARD_BYTES)
    (released / 'config.json').write_text(json.dumps(config, indent=2))
    tokenizer = _tokenizer_with_pad(load_text_tokenizer(), native.text_vocab_size)
    tokenizer.save_pretrained(str(released))
    written_s = time.perf_counter() - start

    stored = checkpoint_tensors(released)

    def native_tensors():
        for mapping in plan:
            tensors = mapping.to_native([read_tensor(stored[n]) for n in mapping.released])
            yield from zip(mapping.native, tensors, strict=True)
        for name in NATIVE_ONLY:
            yield name, torch.zeros(native_shapes[name], dtype=torch.bfloat16)

    write_shards(native_tensors(), own, SHARD_BYTES)
    native.save_pretrained(str(own))
    tokenizer.save_pretrained(str(own))
    save_statistics(own / 'dataset_statistics.json',
                    DatasetStatistics.from_dict(config['norm_stats']))
    return _describe(released, own, shapes, written_s)


def _describe(released: Path, own: Path, shapes: dict, written_s: float) -> dict:
    import torch

    return {
        'released_dir': released, 'own_dir': own, 'write_released_s': written_s,
        'parameters': sum(int(torch.Size(s).numel()) for s in shapes.values()),
        'released_tensors': len(shapes),
        'released_disk_bytes': sum(f.stat().st_size for f in released.glob('*.safetensors')),
        'own_disk_bytes': sum(f.stat().st_size for f in own.glob('*.safetensors')),
        'shards': len(list(released.glob('model-*.safetensors'))),
    }


def measure(mode: str, path: Path) -> dict:
    """Run one load in a fresh interpreter; its JSON line."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env['PYTHONPATH'] = root + os.pathsep + env.get('PYTHONPATH', '')
    out = subprocess.run([sys.executable, '-c', CHILD, mode, str(path)], env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f'{mode} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Write the fixtures, load them each way, print and save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--llm-hidden', type=int, default=512)
    parser.add_argument('--llm-layers', type=int, default=4)
    parser.add_argument('--no-save', action='store_true', help='print only')
    parser.add_argument('--keep', type=Path, default=None,
                        help='write the fixtures here and keep them (reused if present)')
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix='openvla_load_'))
    try:
        fixture = write_fixtures(root, args.llm_hidden, args.llm_layers)
        bf16_bytes = fixture['parameters'] * 2
        runs = {'released_native_bf16': fixture['released_dir'],
                'own_format_bf16': fixture['own_dir'],
                'plain_fp32': fixture['released_dir']}
        results = {}
        for mode, path in runs.items():
            r = measure(mode, path)
            increment = r['peak_rss_bytes'] - r['baseline_rss_bytes']
            r.update(load_increment_bytes=increment,
                     increment_over_bf16_weights=round(increment / bf16_bytes, 3),
                     peak_over_bf16_weights=round(r['peak_rss_bytes'] / bf16_bytes, 3))
            results[mode] = r
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    report = {
        'benchmark': 'openvla_load',
        'machine': f'{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}',
        'fixture': {k: v for k, v in fixture.items() if not k.endswith('_dir')}
        | {'bf16_weight_bytes': bf16_bytes, 'llm_hidden': args.llm_hidden,
           'llm_layers': args.llm_layers},
        'results': results,
        'goal': 'released_native_bf16 load increment <= 1.3 x bf16 weights',
    }
    print(json.dumps(report, indent=2))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
    main()
