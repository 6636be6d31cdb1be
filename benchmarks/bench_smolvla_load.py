"""SmolVLA checkpoint loading at smolvla_base's size: load time and peak RSS.

Writes (once, into ``--dir``) a LeRobot-layout SmolVLA checkpoint with smolvla_base's
architecture (SmolVLM2-500M sizes, 16 VLM layers, 0.75-wide expert, two 480x640 cameras,
6-D state and action) and random weights, plus a local VLM directory (the SmolVLM2-500M
config and a byte-level stand-in tokenizer). Then, in a fresh process per dtype, imports
torch/transformers, records the RSS, loads the checkpoint strictly through
``make_policy('smolvla', model_path=..., vlm_path=...)`` and records the load time and
the process's peak RSS (VmHWM). ``--predict`` also times one ``predict_chunk`` (and the
peak RSS after it: float32 weights on CPU stay memory-mapped from the file, so their pages
count only once touched). Prints one JSON object.

    .venv/bin/python benchmarks/bench_smolvla_load.py [--dir /tmp/smolvla_bench]
        [--dtypes float32 bfloat16] [--file-dtype float32] [--predict]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

CAMERAS = ('top', 'wrist')


def _vm(field: str) -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024.0
    return float('nan')


def write_fixture(root: Path, file_dtype: str) -> tuple[Path, Path, Path]:
    """The checkpoint, VLM and action-space paths (written if absent)."""
    import torch
    import yaml
    from safetensors.torch import save_file
    from transformers import SmolVLMConfig

    from vla_ros.policies.smolvla.configuration import PRESETS, SmolVLAConfig
    from vla_ros.policies.smolvla.policy import SmolVLAPolicy
    from vla_ros.policies.smolvla.processors import FeatureNormalizer, write_pipelines
    from vla_ros.policies.smolvla.vlm_files import tiny_tokenizer

    ckpt, vlm, space = root / 'checkpoint', root / 'vlm', root / 'joints.yaml'
    if (ckpt / 'policy_postprocessor.json').is_file():  # written last
        return ckpt, vlm, space
    root.mkdir(parents=True, exist_ok=True)
    preset = dict(PRESETS['full'])
    vlm_dict = preset.pop('vlm')
    SmolVLMConfig(**vlm_dict).save_pretrained(str(vlm))
    tiny_tokenizer().save_pretrained(str(vlm))
    config = SmolVLAConfig(**preset)
    with torch.device('meta'):
        model = SmolVLAPolicy.build_model(config, SmolVLMConfig(**vlm_dict))
    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, file_dtype)
    state = {k: (torch.randn(v.shape, generator=gen) * 0.02).to(dtype)
             for k, v in model.state_dict().items()}
    ckpt.mkdir(parents=True, exist_ok=True)
    save_file(state, str(ckpt / 'model.safetensors'))
    del state
    (ckpt / 'config.json').write_text(json.dumps(config.lerobot_dict(), indent=2))
    n = 6
    stats = {k: torch.zeros(n) for k in ('mean', 'min', 'q01')}
    stats.update({k: torch.ones(n) for k in ('std', 'max', 'q99')})
    features = {**config.input_features, **config.output_features}
    pre = FeatureNormalizer(features, dict(config.normalization_mapping),
                            {'observation.state': dict(stats), 'action': dict(stats)})
    post = FeatureNormalizer(dict(config.output_features), dict(config.normalization_mapping),
                             {'action': dict(stats)})
    write_pipelines(ckpt, config, pre, post, {'max_length': 48, 'padding': 'max_length',
                                              'padding_side': 'right', 'truncation': True})
    dims = [{'name': f'joint{i}', 'low': -10.0, 'high': 10.0, 'unit': 'rad'} for i in range(n)]
    space.write_text(yaml.safe_dump({'name': 'so100_like', 'dimensions': dims}))
    return ckpt, vlm, space


def measure(ckpt: str, vlm: str, space: str, dtype: str, predict: bool) -> dict:
    """Load once in this (fresh) process; times and memory in MB."""
    import time

    import torch  # noqa: F401 - imported before the baseline RSS on purpose
    import transformers  # noqa: F401

    from vla_ros.policies.registry import make_policy

    baseline = _vm('VmRSS')
    start = time.perf_counter()
    policy = make_policy('smolvla', model_path=ckpt, vlm_path=vlm, action_space=space,
                         dtype=dtype)
    load_s = time.perf_counter() - start
    out = {'dtype': dtype, 'load_s': round(load_s, 2), 'rss_before_load_mb': round(baseline),
           'rss_after_load_mb': round(_vm('VmRSS')), 'peak_rss_mb': round(_vm('VmHWM')),
           'parameters': policy.num_parameters()}
    if predict:
        from vla_ros.policies.contract import Observation

        obs = Observation.make_example(policy.spec, 'pick up the cube')
        obs.proprio = [0.0] * policy.config.state_dim
        start = time.perf_counter()
        policy.predict_chunk(obs)
        out['predict_chunk_s'] = round(time.perf_counter() - start, 2)
        out['peak_rss_after_predict_mb'] = round(_vm('VmHWM'))
    return out


def main() -> None:
    """Parse arguments, write the fixture, measure each dtype in its own process."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dir', default='/tmp/smolvla_bench')
    parser.add_argument('--dtypes', nargs='+', default=['float32', 'bfloat16'])
    parser.add_argument('--file-dtype', default='float32')
    parser.add_argument('--predict', action='store_true')
    parser.add_argument('--_measure', nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        ckpt, vlm, space, dtype = args._measure
        print(json.dumps(measure(ckpt, vlm, space, dtype, args.predict)))
        return
    ckpt, vlm, space = write_fixture(Path(args.dir), args.file_dtype)
    size_mb = (ckpt / 'model.safetensors').stat().st_size / 2**20
    runs = []
    for dtype in args.dtypes:
        cmd = [sys.executable, __file__, '--_measure', str(ckpt), str(vlm), str(space), dtype]
        if args.predict:
            cmd.append('--predict')
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps({'checkpoint_mb': round(size_mb), 'file_dtype': args.file_dtype,
                      'runs': runs}, indent=2))


if __name__ == '__main__':
    main()
