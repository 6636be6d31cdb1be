"""Developer check: vla_ros's pi0 / pi05 against LeRobot's own code on the same checkpoint.

LeRobot cannot be a dependency here (Python >= 3.12, torch < 2.12, transformers < 5.6; see
issue 17), so this script runs LeRobot's *source* from a local checkout for a one-off
comparison; nothing of it is imported by vla_ros. It:

1. copies ``<lerobot>/src/lerobot`` to a temporary directory and rewrites the five
   Python-3.12-only generic declarations (``class C[T]``, ``type X = ...``) for 3.11;
2. stubs the modules this venv lacks (torchvision, av, pandas, ...; none is used by the
   π code paths) and shims two transformers-5.24 changes LeRobot's pin predates: a custom
   4-D attention mask is passed through as given, and the prefix cache is cloned layer by
   layer;
3. builds LeRobot's ``PI0Policy`` / ``PI05Policy`` with small Gemma stacks and a one-layer
   SigLIP (LeRobot hard-codes the 257,152-token vocabulary, so the embedding is real-size:
   ~2 GB of RAM), randomizes its norms, and writes its ``state_dict()`` into a
   LeRobot-layout fixture (vla_ros's writer for the config/processor files);
4. loads that directory with ``make_policy`` (strict) and compares, for the same
   observation and noise: the prefix embeddings and per-layer keys/values, the normalized
   chunk of ``sample_actions``, and the whole pipeline (LeRobot's processors loaded from
   the fixture's JSON with ``PolicyProcessorPipeline.from_pretrained`` -> LeRobot's
   ``predict_action_chunk`` -> its postprocessor) against ``predict_with_noise``.

Needs ``draccus`` and a few small pure-Python packages on ``--deps`` (``pip install
--target DIR --no-deps draccus mergedeep typing_inspect mypy_extensions toml
pyyaml-include``). Prints one JSON object per kind.

    python scripts/verify_lerobot_pi_reference.py --lerobot /path/to/lerobot --deps DIR
"""

import argparse
import importlib.abc
import importlib.machinery
import json
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path

MISSING = ('torchvision', 'av', 'cv2', 'datasets', 'pyarrow', 'imageio', 'jsonlines',
           'pandas', 'accelerate', 'deepdiff', 'termcolor', 'einops', 'gymnasium', 'rerun',
           'pynput', 'diffusers', 'num2words', 'peft', 'scipy', 'wandb', 'torchcodec',
           'requests')
PALI = dict(width=2048, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16)
EXPERT = dict(width=64, depth=2, mlp_dim=96, num_heads=8, num_kv_heads=1, head_dim=16)
VISION = dict(width=32, depth=1, mlp_dim=4304, num_heads=2, patch_size=14)


class _StubMeta(type):
    def __getattr__(cls, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _StubMeta(name, (_Stub,), {})


class _Stub(metaclass=_StubMeta):
    """Any attribute is another stub class; calls return stubs (import-time use only)."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _StubMeta(name, (_Stub,), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in MISSING:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attr(name):
            if name.startswith('__'):
                raise AttributeError(name)
            return _StubMeta(name, (_Stub,), {})

        module.__getattr__ = attr
        return module

    def exec_module(self, module):
        pass


def prepare_source(lerobot: Path, into: Path) -> Path:
    """Copy src/lerobot and rewrite its 3.12-only generic syntax for this interpreter."""
    src = into / 'src'
    shutil.copytree(lerobot / 'src' / 'lerobot', src / 'lerobot', symlinks=True,
                    ignore=shutil.ignore_patterns('*.md', '*.mdx'))
    for path in (src / 'lerobot').rglob('*.py'):
        text = path.read_text()
        new = re.sub(r'^type (\w+) = ', r'\1 = ', text, flags=re.M)
        new = re.sub(r'^(@dataclass\n)?class (\w+)\[([\w, ]+)\]\((\w+)\):',
                     lambda m: ('from typing import Generic, TypeVar\n' +
                                ''.join(f'{v.strip()} = TypeVar("{v.strip()}")\n'
                                        for v in m.group(3).split(',')) +
                                (m.group(1) or '') +
                                f'class {m.group(2)}({m.group(4)}, Generic[{m.group(3)}]):'),
                     new, flags=re.M)
        new = re.sub(r'^class (\w+)\[(\w+)\]:',
                     r'from typing import Generic, TypeVar\n\2 = TypeVar("\2")\n'
                     r'class \1(Generic[\2]):', new, flags=re.M)
        new = re.sub(r'^def (\w+)\[\w+: \w+\]\(fpath: Path, obj: T\) -> T:',
                     r'def \1(fpath, obj):', new, flags=re.M)
        if new != text:
            path.write_text(new)
    return src


def import_lerobot(kind: str):
    """LeRobot's modeling module for ``kind``, patched to small Gemma/SigLIP sizes."""
    from transformers.models.auto import image_processing_auto, processing_auto  # noqa: F401
    from transformers.utils import import_utils

    import_utils.is_torchvision_available()  # cache the real answer before stubbing
    sys.meta_path.insert(0, _StubFinder())
    import lerobot.policies.pi_gemma as pi_gemma
    from transformers import DynamicCache, PaliGemmaConfig

    if kind == 'pi0':
        import lerobot.policies.pi0.modeling_pi0 as modeling
    else:
        import lerobot.policies.pi05.modeling_pi05 as modeling
    pi_gemma.create_causal_mask = lambda config, inputs_embeds, attention_mask, **kw: \
        attention_mask

    def clone(cache):
        new = DynamicCache()
        for i, layer in enumerate(cache.layers):
            new.update(layer.keys.clone(), layer.values.clone(), i)
        return new

    modeling.clone_past_key_values = clone

    def gemma(variant):
        d = PALI if variant == 'gemma_2b' else EXPERT
        return modeling.GemmaConfig(d['width'], d['depth'], d['mlp_dim'], d['num_heads'],
                                    d['num_kv_heads'], d['head_dim'])

    modeling.get_gemma_config = gemma
    gemma_config = modeling.CONFIG_MAPPING['gemma']
    modeling.CONFIG_MAPPING = {
        'paligemma': lambda: PaliGemmaConfig(vision_config=dict(
            hidden_size=VISION['width'], num_hidden_layers=VISION['depth'],
            num_attention_heads=VISION['num_heads'], patch_size=14, image_size=28,
            vision_use_head=False)),
        'gemma': gemma_config}
    return modeling


def compare(kind: str, work: Path) -> dict:
    """Build LeRobot's policy, write its weights as a fixture, compare with vla_ros."""
    import numpy as np
    import torch

    from vla_ros.policies.contract import Observation
    from vla_ros.policies.lerobot_pi.fixtures import write_checkpoint, write_tokenizer
    from vla_ros.policies.registry import make_policy

    modeling = import_lerobot(kind)  # first: it installs the stubs LeRobot's imports need
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import (
        policy_action_to_transition,
        transition_to_policy_action,
    )
    if kind == 'pi0':
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
        policy_class = modeling.PI0Policy
    else:
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
        policy_class = modeling.PI05Policy
    torch.manual_seed(0)
    cameras = ('base_0_rgb', 'left_wrist_0_rgb')
    config = Config(
        input_features={**{f'observation.images.{c}': PolicyFeature(FeatureType.VISUAL,
                                                                      (3, 48, 64))
                           for c in cameras},
                        'observation.state': PolicyFeature(FeatureType.STATE, (6,))},
        output_features={'action': PolicyFeature(FeatureType.ACTION, (7,))},
        chunk_size=4, n_action_steps=4, max_state_dim=8, max_action_dim=8,
        num_inference_steps=5, image_resolution=(28, 28), device='cpu')
    reference = policy_class(config).eval()
    with torch.no_grad():  # Gemma norms start at zero, adaRMS at zero weight: randomize
        for name, p in reference.named_parameters():
            if name.endswith('norm.weight') or 'norm.dense' in name:
                p.normal_(0, 0.1 if name.endswith('norm.weight') else 0.05)
    state = {k: v.detach().clone().contiguous() for k, v in reference.state_dict().items()}
    dims = {'vision': VISION, 'paligemma': PALI, 'expert': EXPERT, 'vocab_size': 257152}
    path = write_checkpoint(work / 'ckpt', kind, dims=dims, image_resolution=28, chunk_size=4,
                            max_state_dim=8, max_action_dim=8, num_inference_steps=5,
                            cameras=cameras, edit_state=lambda _: state)
    tok = write_tokenizer(work / 'tok')
    ours = make_policy(kind, model_path=str(path), tokenizer_path=str(tok))

    obs = Observation.make_example(ours.spec, 'pick up the red cube', stamp=1.0, seed=3)
    obs.proprio = np.array([0.5, -0.2, 0.1, 0.9, -1.1, 0.3], dtype=np.float32)
    x = ours.model_inputs(obs)
    noise = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(7))
    result = {'kind': kind, 'lerobot_tensors': len(state)}
    with torch.no_grad():
        batch = {f'observation.images.{c}': torch.from_numpy(obs.images[c]).permute(2, 0, 1)
                 [None].float() / 255 for c in cameras}
        images, masks = reference._preprocess_images(batch)
        result['pixels_max_abs_diff'] = max(float((a - b).abs().max())
                                            for a, b in zip(images, x['images'], strict=True))
        emb, pad, blocks = reference.model.embed_prefix(images, masks, x['token_ids'],
                                                        x['token_masks'])
        mine, _, _ = ours.model.prefix(x['images'], x['image_masks'], x['token_ids'],
                                       x['token_masks'])
        result['prefix_embeddings_equal'] = bool(torch.equal(emb, mine))
        from lerobot.policies.common.vla_utils import (
            make_att_2d_masks,
            prepare_attention_masks_4d,
        )
        _, cache = reference.model.paligemma_with_expert.forward(
            attention_mask=prepare_attention_masks_4d(make_att_2d_masks(pad, blocks)),
            position_ids=torch.cumsum(pad, dim=1) - 1, past_key_values=None,
            inputs_embeds=[emb, None], use_cache=True)
        my_cache, _ = ours.model.run_prefix(x['images'], x['image_masks'], x['token_ids'],
                                            x['token_masks'])
        result['prefix_keys_values_max_abs_diff'] = max(
            max(float((layer.keys - k).abs().max()), float((layer.values - v).abs().max()))
            for layer, (k, v) in zip(cache.layers, my_cache, strict=True))
        args = [images, masks, x['token_ids'], x['token_masks']]
        if kind == 'pi0':
            args.append(x['state'])
        ref_chunk = reference.model.sample_actions(*args, noise=noise.clone(), num_steps=5)
        my_chunk = ours.model.sample_actions(x['images'], x['image_masks'], x['token_ids'],
                                             x['token_masks'], x['state'], noise.clone(), 5)
        result['normalized_chunk_max_abs_diff'] = float((ref_chunk - my_chunk).abs().max())

        pre = PolicyProcessorPipeline.from_pretrained(
            str(path), config_filename='policy_preprocessor.json',
            overrides={'tokenizer_processor': {'tokenizer_name': str(tok)}})
        post = PolicyProcessorPipeline.from_pretrained(
            str(path), config_filename='policy_postprocessor.json',
            to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
        raw = {f'observation.images.{c}': torch.from_numpy(obs.images[c]).permute(2, 0, 1)
               .float() / 255 for c in cameras}
        raw['observation.state'] = torch.from_numpy(obs.proprio)
        raw['task'] = obs.instruction
        processed = pre(raw)
        result['tokens_equal'] = bool(
            torch.equal(processed['observation.language.tokens'], x['token_ids']) and
            torch.equal(processed['observation.language.attention_mask'].bool(),
                        x['token_masks']))
        lerobot_chunk = post(reference.predict_action_chunk(processed, noise=noise.clone()))
    ours_chunk = ours.predict_with_noise(obs, noise)
    result['pipeline_chunk_max_abs_diff'] = float(np.abs(lerobot_chunk[0].numpy() -
                                                         ours_chunk).max())
    result['pipeline_chunk_abs_max'] = float(np.abs(ours_chunk).max())
    return result


def main() -> None:
    """Run the comparison for pi0 and pi05 in fresh interpreters, print JSON."""
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--lerobot', required=True, help='a LeRobot checkout (has src/)')
    parser.add_argument('--deps', required=True, help='pip --target dir with draccus etc.')
    parser.add_argument('--kind', choices=('pi0', 'pi05'))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='lerobot_ref_') as tmp:
        tmp = Path(tmp)
        if args.kind:  # child: one kind per interpreter (module patches are global)
            sys.path[:0] = [str(Path(args.lerobot)), args.deps]
            print(json.dumps(compare(args.kind, tmp)))
            return
        src = prepare_source(Path(args.lerobot), tmp)
        for kind in ('pi0', 'pi05'):
            out = subprocess.run([sys.executable, __file__, '--lerobot', str(src), '--deps',
                                  args.deps, '--kind', kind], capture_output=True, text=True)
            lines = out.stdout.strip().splitlines()
            print(lines[-1] if out.returncode == 0 and lines else
                  json.dumps({'kind': kind, 'error': out.stderr[-2000:]}))


if __name__ == '__main__':
    main()
