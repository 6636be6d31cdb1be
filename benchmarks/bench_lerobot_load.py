"""Load time and peak RSS of a LeRobot π₀ checkpoint on a realistic-size fixture.

Writes (to a temporary directory, deleted afterwards) a LeRobot-layout π₀ checkpoint with
the real SigLIP-So400m/14 tower at 224 px, the real 257,152-row embedding table and
small Gemma stacks (the full Gemma-2B + 300M would need ~14 GB in fp32; this machine
shares 23 GB), then, in a fresh process per dtype, measures: the time of
``make_policy('pi0', model_path=..., tokenizer_path=...)`` (meta-device build + strict
assignment from the memory-mapped file), the process's peak RSS after loading and after
one predicted chunk, and that chunk's latency. Prints one JSON object.

    .venv/bin/python benchmarks/bench_lerobot_load.py [--gemma-width 256] [--keep DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

CHILD = r'''
import json, sys, time
start = time.perf_counter()
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[4]))
from vla_ros.policies.contract import Observation
from vla_ros.policies.registry import make_policy
imported = time.perf_counter()

def status_mib(field):
    # VmHWM (peak) and VmRSS of this process; getrusage's maxrss would include the
    # parent's peak (it survives fork + exec).
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024

def rss_mib():
    return status_mib('VmHWM')

def current_mib():
    return status_mib('VmRSS')

before = rss_mib()
t0 = time.perf_counter()
policy = make_policy('pi0', model_path=sys.argv[1], tokenizer_path=sys.argv[2],
                     dtype=sys.argv[3])
load_s = time.perf_counter() - t0
after_load = rss_mib(), current_mib()
obs = Observation.make_example(policy.spec, 'pick up the red cube', stamp=1.0)
obs.proprio = np.zeros(policy.state_dim, dtype=np.float32)
t0 = time.perf_counter()
chunk = policy.predict_chunk(obs)
predict_s = time.perf_counter() - t0
print(json.dumps({
    'dtype': sys.argv[3], 'import_s': round(imported - start, 2), 'load_s': round(load_s, 2),
    'peak_rss_before_load_mib': round(before), 'peak_rss_after_load_mib': round(after_load[0]),
    'rss_after_load_mib': round(after_load[1]),
    'peak_rss_after_predict_mib': round(rss_mib()), 'first_chunk_s': round(predict_s, 2),
    'chunk_shape': list(chunk.shape),
    'parameters': sum(p.numel() for p in policy.model.parameters())}))
'''


def main() -> None:
    """Write the fixture, measure each dtype in a fresh process, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--gemma-width', type=int, default=256)
    parser.add_argument('--gemma-depth', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--dtypes', nargs='+', default=['float32', 'bfloat16'])
    parser.add_argument('--keep', default='', help='write the fixture here and keep it')
    args = parser.parse_args()

    from vla_ros.policies.lerobot_pi.fixtures import write_checkpoint, write_tokenizer
    from vla_ros.policies.lerobot_pi.modeling import VOCAB_SIZE, VisionDims

    root = args.keep or tempfile.mkdtemp(prefix='bench_lerobot_')
    try:
        w, depth = args.gemma_width, args.gemma_depth
        head_dim = w // 8
        dims = {'vision': VisionDims().__dict__,
                'paligemma': {'width': w, 'depth': depth, 'mlp_dim': 4 * w, 'num_heads': 8,
                              'num_kv_heads': 1, 'head_dim': head_dim},
                'expert': {'width': w // 2, 'depth': depth, 'mlp_dim': 2 * w, 'num_heads': 8,
                           'num_kv_heads': 1, 'head_dim': head_dim},
                'vocab_size': VOCAB_SIZE}
        t0 = time.perf_counter()
        ckpt = write_checkpoint(os.path.join(root, 'pi0'), 'pi0', dims=dims,
                                image_resolution=224, image_hw=(224, 224), chunk_size=50,
                                max_state_dim=32, max_action_dim=32, num_inference_steps=10,
                                cameras=('base_0_rgb',))
        tok = write_tokenizer(os.path.join(root, 'tok'))
        write_s = time.perf_counter() - t0
        size = os.path.getsize(ckpt / 'model.safetensors')
        runs = []
        for dtype in args.dtypes:
            out = subprocess.run([sys.executable, '-c', CHILD, str(ckpt), str(tok), dtype,
                                  str(args.threads)], capture_output=True, text=True,
                                 check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps({'fixture': {'vision': 'SigLIP-So400m/14 (27 x 1152), 224 px, 1 '
                                                'camera',
                                      'gemma': dims['paligemma'], 'expert': dims['expert'],
                                      'vocab_size': VOCAB_SIZE,
                                      'model_safetensors_mib': round(size / 2**20),
                                      'write_s': round(write_s, 1)},
                          'runs': runs}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
