"""Developer check: vla_ros's SmolVLA against LeRobot's own code on the same checkpoint.

Same approach as ``verify_lerobot_pi_reference.py`` (whose source preparation and module
stubs it imports): LeRobot's *source* runs from a temporary copy of a local checkout;
nothing of it is imported by vla_ros. This script:

1. writes a small local "SmolVLM2" directory (``SmolVLMConfig``: SigLIP 2 layers x 16 at
   512 px / 16 px patches, pixel shuffle 4 -> 64 tokens per image; Llama 4 layers x 64,
   4 heads of 16, 2 KV heads) and vla_ros's byte-level tokenizer with SmolVLM's special
   tokens;
2. builds LeRobot's ``SmolVLAPolicy`` from it (``load_vlm_weights=False``: LeRobot builds
   ``SmolVLMForConditionalGeneration`` from ``AutoConfig``), randomizes every weight
   including the norms, and lets LeRobot itself write the checkpoint: its
   ``save_pretrained`` (config.json, model.safetensors) and the processors of
   ``make_smolvla_pre_post_processors`` (normalizer statistics included);
3. loads that directory with ``make_policy('smolvla', ...)`` (strict) and compares, for
   the same observation and noise: the model pixels (resize-with-pad to 512, [-1, 1]),
   the language tokens (LeRobot's preprocessor: newline, tokenizer settings), the
   normalized padded state, the prefix embeddings and its 2-D attention mask, every VLM
   layer's keys/values, one denoising velocity, the normalized chunk of
   ``sample_actions``, and the whole pipeline (LeRobot's processors loaded back with
   ``PolicyProcessorPipeline.from_pretrained`` -> ``predict_action_chunk`` -> its
   postprocessor) against ``predict_chunk``.

Shims (each only replaces what this venv cannot run, none changes a computation):
``AutoProcessor.from_pretrained`` inside ``smolvlm_with_expert`` returns an object whose
``tokenizer`` is the local tokenizer (SmolVLM's processor would also build image/video
processors that need torchvision; LeRobot only reads ``processor.tokenizer``'s
``fake_image_token_id`` / ``global_image_token_id``, which are set to the ids of
``<fake_token_around_image>`` / ``<global-img>`` as SmolVLM2's tokenizer config declares);
``DynamicCache.crop(n)``, which in LeRobot's pinned transformers (5.4-5.5) keeps the first
``n`` tokens and in 5.24 refuses a positive ``n``, is given the old meaning (LeRobot crops
the suffix keys/values appended by self-attention layers after each denoising step).

Variants: ``cross_attn`` (smolvla_base's layout: 2 cameras + 1 empty camera, cross
attention every other layer), ``self_attn_special`` (self attention everywhere, image
special tokens, fixed prefix_length with padding, pad_language_to='max_length') and
``sparse_expert`` (2 expert layers for 4 VLM layers). Each also compares the training
loss (LeRobot's joint prefix+suffix ``forward`` against ``flow_loss``, same noise/time).

    python scripts/verify_lerobot_smolvla_reference.py --lerobot /path/to/lerobot --deps DIR
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify_lerobot_pi_reference import _StubFinder, prepare_source  # noqa: E402

VLM = {
    'scale_factor': 4, 'image_token_id': 3, 'tie_word_embeddings': False,
    'vision_config': {'hidden_size': 16, 'intermediate_size': 32, 'num_hidden_layers': 2,
                      'num_attention_heads': 2, 'image_size': 512, 'patch_size': 16},
    'text_config': {'vocab_size': 300, 'hidden_size': 64, 'intermediate_size': 96,
                    'num_hidden_layers': 6, 'num_attention_heads': 4,
                    'num_key_value_heads': 2, 'head_dim': 16, 'rms_norm_eps': 1e-5,
                    'tie_word_embeddings': False, 'model_type': 'llama'},
}
VARIANTS = {
    'cross_attn': dict(attention_mode='cross_attn', empty_cameras=1,
                       add_image_special_tokens=False, prefix_length=-1,
                       pad_language_to='longest'),
    'self_attn_special': dict(attention_mode='self_attn', empty_cameras=0,
                              add_image_special_tokens=True, prefix_length=200,
                              pad_language_to='max_length'),
    # half as many expert layers (on VLM layers 0 and 2), self attention on layer 0 only:
    # the sparse layout LeRobot can run with its cache
    'sparse_expert': dict(attention_mode='cross_attn', empty_cameras=0,
                          add_image_special_tokens=False, prefix_length=-1,
                          pad_language_to='longest', num_expert_layers=2,
                          self_attn_every_n_layers=4),
    # load_vlm_weights=True (LeRobot's fine-tuning recipe): LeRobot then loads the VLM with
    # from_pretrained(torch_dtype='bfloat16') and runs it in bfloat16, the expert in float32
    'vlm_bf16': dict(attention_mode='cross_attn', empty_cameras=0,
                     add_image_special_tokens=False, prefix_length=-1,
                     pad_language_to='longest', load_vlm_weights=True),
    # load_vlm_weights=False but the VLM's config.json declares a bfloat16 text model:
    # LeRobot's expert (built from that config) is then bfloat16, its VLM float32
    'expert_dtype_from_vlm_config': dict(attention_mode='cross_attn', empty_cameras=0,
                                         add_image_special_tokens=False, prefix_length=-1,
                                         pad_language_to='longest',
                                         vlm_text_dtype='bfloat16'),
}
CAMERAS = ('top', 'wrist')
STATE_DIM, ACTION_DIM, CHUNK, STEPS = 6, 5, 6, 4


def write_vlm_dir(path: Path, text_dtype: str | None = None):
    """The local SmolVLM2 stand-in: config, (random) weights and the tokenizer."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    from vla_ros.policies.smolvla.vlm_files import tiny_tokenizer

    path.mkdir(parents=True, exist_ok=True)
    # weights only for load_vlm_weights=True (LeRobot's from_pretrained; overwritten by the
    # checkpoint's own weights right after)
    SmolVLMForConditionalGeneration(SmolVLMConfig(**VLM)).save_pretrained(str(path))
    config = SmolVLMConfig(**VLM)
    config.text_config.dtype = text_dtype
    config.save_pretrained(str(path))
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(str(path))
    return tokenizer


def import_lerobot(tokenizer):
    """LeRobot's SmolVLA modules, with the AutoProcessor shim (see the module docstring)."""
    from transformers.models.auto import image_processing_auto, processing_auto  # noqa: F401
    from transformers.utils import import_utils

    import_utils.is_torchvision_available()  # cache the real answer before stubbing
    sys.meta_path.insert(0, _StubFinder())
    import lerobot.policies.smolvla.smolvlm_with_expert as with_expert

    from vla_ros.policies.smolvla.vlm_files import FAKE_IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN

    tokenizer.fake_image_token_id = tokenizer.convert_tokens_to_ids(FAKE_IMAGE_TOKEN)
    tokenizer.global_image_token_id = tokenizer.convert_tokens_to_ids(GLOBAL_IMAGE_TOKEN)

    class Processor:
        @staticmethod
        def from_pretrained(_name, *args, **kwargs):
            return type('Processor', (), {'tokenizer': tokenizer})()

    with_expert.AutoProcessor = Processor

    def crop(cache, max_length):  # 5.4's crop(n) kept n tokens; 5.24 takes -tokens_to_drop
        for layer in cache.layers:
            extra = layer.keys.shape[-2] - max_length if layer.is_initialized else 0
            if extra > 0:
                layer.crop(-extra)

    with_expert.DynamicCache.crop = crop
    import lerobot.policies.smolvla.modeling_smolvla as modeling
    return modeling


def max_diff(a, b) -> float:
    """Largest absolute difference of two tensors of the same shape (inf if shapes differ)."""
    if tuple(a.shape) != tuple(b.shape):
        return float('inf')
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def compare(variant: str, work: Path) -> dict:
    """Build LeRobot's SmolVLA, let LeRobot save it, load it with vla_ros, compare."""
    import numpy as np
    import torch
    import yaml

    from vla_ros.policies.contract import Observation
    from vla_ros.policies.registry import make_policy

    settings = dict(VARIANTS[variant])
    vlm_dir = work / 'SmolVLM2-small'
    tokenizer = write_vlm_dir(vlm_dir, settings.pop('vlm_text_dtype', None))
    modeling = import_lerobot(tokenizer)
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.common.vla_utils import make_att_2d_masks
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import (
        policy_action_to_transition,
        transition_to_policy_action,
    )

    torch.manual_seed(0)
    config = SmolVLAConfig(
        input_features={**{f'observation.images.{c}': PolicyFeature(FeatureType.VISUAL,
                                                                      (3, 48, 64))
                           for c in CAMERAS},
                        'observation.state': PolicyFeature(FeatureType.STATE, (STATE_DIM,))},
        output_features={'action': PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
        chunk_size=CHUNK, n_action_steps=CHUNK, max_state_dim=8, max_action_dim=7,
        num_steps=STEPS, num_vlm_layers=4, tokenizer_max_length=24,
        vlm_model_name=str(vlm_dir), device='cpu', **{'load_vlm_weights': False, **settings})
    reference = modeling.SmolVLAPolicy(config).eval()
    with torch.no_grad():  # everything random, norms around 1 so that none is trivial
        gen = torch.Generator().manual_seed(1)
        for name, p in reference.named_parameters():
            if 'norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    stats = {'observation.state': {'mean': torch.linspace(-1, 1, STATE_DIM),
                                   'std': torch.linspace(0.5, 2, STATE_DIM)},
             'action': {'mean': torch.linspace(-0.5, 0.5, ACTION_DIM),
                        'std': torch.linspace(0.1, 0.7, ACTION_DIM)}}
    for feature in stats.values():  # MIN_MAX/QUANTILES unused here but declared by stats
        n = feature['mean'].shape[0]
        feature.update(min=-torch.full((n,), 5.0), max=torch.full((n,), 5.0),
                       q01=-torch.full((n,), 3.0), q99=torch.full((n,), 3.0))
    path = work / 'ckpt'
    reference.save_pretrained(path)
    pre_saved, post_saved = make_smolvla_pre_post_processors(config, stats)
    pre_saved.save_pretrained(path)
    post_saved.save_pretrained(path)
    space = work / 'space.yaml'
    space.write_text(yaml.safe_dump({'name': 'wide', 'dimensions': [
        {'name': f'j{i}', 'low': -1e3, 'high': 1e3, 'unit': 'rad'}
        for i in range(ACTION_DIM)]}))
    ours = make_policy('smolvla', model_path=str(path), vlm_path=str(vlm_dir),
                       action_space=str(space))
    net = ours.model.model

    obs = Observation.make_example(ours.spec, 'pick up the red cube', stamp=1.0, seed=3)
    obs.proprio = np.array([0.5, -0.2, 0.1, 0.9, -1.1, 0.3], dtype=np.float32)
    noise = torch.randn(1, CHUNK, 7, generator=torch.Generator().manual_seed(7))
    result = {'variant': variant, 'lerobot_tensors': len(reference.state_dict()),
              'parameter_dtypes_equal': all(
                  p.dtype == dict(ours.model.named_parameters())[n].dtype
                  for n, p in reference.named_parameters()),
              'lerobot_dtypes': sorted({str(p.dtype) for p in reference.parameters()}),
              'checkpoint_files': sorted(p.name for p in path.iterdir())}
    with torch.no_grad():
        pre = PolicyProcessorPipeline.from_pretrained(
            str(path), config_filename='policy_preprocessor.json',
            overrides={'tokenizer_processor': {'tokenizer_name': str(vlm_dir)}})
        post = PolicyProcessorPipeline.from_pretrained(
            str(path), config_filename='policy_postprocessor.json',
            to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
        raw = {f'observation.images.{c}': torch.from_numpy(obs.images[c]).permute(2, 0, 1)
               .float() / 255 for c in CAMERAS}
        raw['observation.state'] = torch.from_numpy(obs.proprio)
        raw['task'] = obs.instruction
        processed = pre(dict(raw))

        images, image_masks = reference.prepare_images(dict(processed))
        pixels, valid = ours.model_images(ours.images_tensor(obs))
        result['pixels_max_abs_diff'] = max(max_diff(a, b) for a, b in
                                            zip(images, pixels, strict=True))
        result['image_count'] = [len(images), len(pixels)]
        result['image_masks_equal'] = all(torch.equal(a, b) for a, b in
                                          zip(image_masks, valid, strict=True))
        ids, id_valid = ours.tokenize([obs.instruction])
        ref_ids = processed['observation.language.tokens']
        ref_mask = processed['observation.language.attention_mask'].bool()
        result['tokens_equal'] = bool(tuple(ref_ids.shape) == tuple(ids.shape) and
                                      torch.equal(ref_ids, ids) and
                                      torch.equal(ref_mask, id_valid))
        result['token_shapes'] = [list(ref_ids.shape), list(ids.shape)]
        long_task = 'put the red cube on the green plate, then push the blue one left\n'
        long_ref = pre({**raw, 'task': long_task})  # already ends with a newline: kept
        long_ids, long_valid = ours.tokenize([long_task])
        result['long_task_tokens_equal'] = bool(
            torch.equal(long_ref['observation.language.tokens'], long_ids) and
            torch.equal(long_ref['observation.language.attention_mask'].bool(), long_valid))
        state = reference.prepare_state(processed)
        my_state = ours.model_state(obs.proprio[None])
        result['state_max_abs_diff'] = max_diff(state, my_state)

        emb, pad, blocks = reference.model.embed_prefix(images, image_masks, ref_ids,
                                                        ref_mask, state)
        my_emb, my_pad, my_starts = net.embed_prefix(pixels, valid, ids, id_valid, my_state)
        result['prefix_embeddings_max_abs_diff'] = max_diff(emb, my_emb)
        result['prefix_pad_equal'] = bool(torch.equal(pad, my_pad))
        from vla_ros.policies.smolvla.modeling import attention_2d
        ref_mask_2d = make_att_2d_masks(pad, blocks)
        result['prefix_mask_2d_equal'] = bool(torch.equal(ref_mask_2d,
                                                          attention_2d(my_pad, my_starts)))
        _, cache = reference.model.vlm_with_expert.forward(
            attention_mask=ref_mask_2d, position_ids=torch.cumsum(pad, dim=1) - 1,
            past_key_values=None, inputs_embeds=[emb, None], use_cache=True)
        my_cache, my_valid = net.encode_prefix(pixels, valid, ids, id_valid, my_state)
        result['prefix_keys_values_max_abs_diff'] = max(
            max(max_diff(layer.keys.transpose(1, 2), k), max_diff(layer.values.transpose(1, 2),
                                                                  v))
            for layer, (k, v) in zip(cache.layers, my_cache, strict=True))
        time = torch.full((1,), 0.75)
        velocity = reference.model.denoise_step(pad, cache, noise.clone(), time)
        result['velocity_max_abs_diff'] = max_diff(
            velocity, net.velocity(my_cache, my_valid, noise.clone(), time))
        ref_chunk = reference.model.sample_actions(images, image_masks, ref_ids, ref_mask,
                                                   state, noise=noise.clone())
        my_chunk = net.sample_actions(pixels, valid, ids, id_valid, my_state, noise.clone())
        result['normalized_chunk_max_abs_diff'] = max_diff(ref_chunk, my_chunk)
        result['normalized_chunk_abs_max'] = float(ref_chunk.abs().max())
        actions = torch.randn(1, CHUNK, 7, generator=torch.Generator().manual_seed(8))
        flow_time = torch.tensor([0.3])
        ref_loss = reference.model.forward(images, image_masks, ref_ids, ref_mask, state,
                                           actions, noise.clone(), flow_time)
        my_loss = net.flow_loss(pixels, valid, ids, id_valid, my_state, actions,
                                noise.clone(), flow_time)
        result['training_loss_max_abs_diff'] = max_diff(ref_loss, my_loss)
        result['training_loss_abs_max'] = float(ref_loss.abs().max())
        reference.reset()
        lerobot_chunk = post(reference.predict_action_chunk(pre(dict(raw)),
                                                            noise=noise.clone()))
    ours_chunk = ours.predict_chunk(obs, noise)
    result['pipeline_chunk_max_abs_diff'] = float(np.abs(lerobot_chunk[0].numpy() -
                                                         ours_chunk).max())
    result['pipeline_chunk_abs_max'] = float(np.abs(ours_chunk).max())
    # vla_ros keeps float32 weights as views into the file's memory map (file-backed);
    # those sit at the file's offsets, not 64-byte aligned, and CPU kernels round them
    # differently from LeRobot's freshly allocated copies. The same weights copied into
    # aligned memory show whether that is all that remains.
    result['weights_unaligned'] = sum(p.data_ptr() % 64 != 0 for p in ours.model.parameters())
    with torch.no_grad():
        for p in ours.model.parameters():
            p.data = p.data.clone()
    aligned = ours.predict_chunk(obs, noise)
    result['pipeline_chunk_max_abs_diff_aligned_copy'] = float(
        np.abs(lerobot_chunk[0].numpy() - aligned).max())
    with torch.no_grad():
        result['training_loss_max_abs_diff_aligned_copy'] = max_diff(ref_loss, net.flow_loss(
            pixels, valid, ids, id_valid, my_state, actions, noise.clone(), flow_time))
    return result


def main() -> None:
    """Run every variant in a fresh interpreter, print one JSON object per variant."""
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--lerobot', required=True, help='a LeRobot checkout (has src/)')
    parser.add_argument('--deps', required=True, help='pip --target dir with draccus etc.')
    parser.add_argument('--variant', choices=tuple(VARIANTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='lerobot_smolvla_ref_') as tmp:
        tmp = Path(tmp)
        if args.variant:  # child: one variant per interpreter (module patches are global)
            sys.path[:0] = [str(Path(args.lerobot)), args.deps]
            print(json.dumps(compare(args.variant, tmp)))
            return
        src = prepare_source(Path(args.lerobot), tmp)
        for variant in VARIANTS:
            out = subprocess.run([sys.executable, __file__, '--lerobot', str(src), '--deps',
                                  args.deps, '--variant', variant], capture_output=True,
                                 text=True)
            lines = out.stdout.strip().splitlines()
            print(lines[-1] if out.returncode == 0 and lines else
                  json.dumps({'variant': variant, 'error': out.stderr[-3000:]}))


if __name__ == '__main__':
    main()
