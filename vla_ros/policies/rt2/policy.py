"""The RT-2-style policy: the action is text the VLM writes, e.g. ``"128 91 241 0 12 255 3"``.

Each of the 7 ``arm7`` dimensions is binned RT-1 style over the action-space bounds
(:class:`~vla_ros.actions.tokenizers.Rt1ActionTokenizer`, 256 bins) and written as a
decimal number. Decoding is greedy and restricted by :class:`.grammar.ActionGrammar`, so
a model emits only digits, separators and EOS; the text is still parsed strictly with
:func:`~vla_ros.actions.tokenizers.text_to_bins`, and anything malformed raises
:class:`~vla_ros.actions.tokenizers.MalformedActionText` (the runtime then holds) rather
than being repaired into a guess. Greedy decoding makes the policy deterministic; the seed
only fixes the random initialisation.
"""

import numpy as np

from vla_ros.actions.tokenizers import MalformedActionText, Rt1ActionTokenizer, text_to_bins
from vla_ros.policies.contract import Observation, PolicyLoadError, PolicySpec
from vla_ros.policies.rt2.configuration import PRESETS, Rt2Config
from vla_ros.policies.rt2.grammar import ActionGrammar
from vla_ros.policies.tokenizer import load_text_tokenizer
from vla_ros.policies.torch_policy import TorchPolicy

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


class Rt2Policy(TorchPolicy):
    """RT-2-style VLA: PaliGemma writes the action's bin indices as text."""

    family = 'rt2'
    config_class = Rt2Config
    presets = PRESETS

    def __init__(self, *args, **kwargs):
        """Build the model (see :class:`TorchPolicy`), the tokenizers and the grammar."""
        super().__init__(*args, **kwargs)
        self.tokenizer = load_text_tokenizer()
        if len(self.tokenizer) != self.config.vocab_size:
            raise PolicyLoadError(f'rt2: the tokenizer has {len(self.tokenizer)} tokens, the '
                                  f'model {self.config.vocab_size} embeddings; they must match')
        self.action_tokenizer = Rt1ActionTokenizer(self.action_space, self.config.num_bins)
        try:
            self.grammar = ActionGrammar.from_tokenizer(self.tokenizer, self.action_space.dim,
                                                        self.config.num_bins)
        except ValueError as exc:
            raise PolicyLoadError(f'rt2: {exc}') from exc

    @classmethod
    def build_model(cls, config: Rt2Config):
        """A randomly initialised PaliGemma with the text tokenizer's special ids."""
        from vla_ros.policies.rt2.modeling import build_paligemma

        tokenizer = load_text_tokenizer()
        return build_paligemma(config, tokenizer.bos_token_id, tokenizer.eos_token_id,
                               tokenizer.unk_token_id if tokenizer.pad_token_id is None
                               else tokenizer.pad_token_id)

    def make_spec(self, config: Rt2Config) -> PolicySpec:
        """One action per inference; SigLIP-normalized images."""
        return PolicySpec(
            name=self.family, action_space=self.action_space, chunk_length=1,
            camera_names=config.camera_names, image_size=(config.image_size,) * 2,
            image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD, control_period=config.control_period)

    # ------------------------------------------------------------------ text
    @property
    def pad_id(self) -> int:
        """Padding id (the tokenizer has none: <unk>, which no target uses)."""
        return self.model.generation_config.pad_token_id

    def prompt_ids(self, instruction: str) -> list:
        """Image placeholders, BOS, the question and a newline (PaliGemma's layout)."""
        c = self.config
        question = c.prompt_template.format(instruction=' '.join(instruction.split()))
        placeholders = [c.vocab_size] * (c.num_image_tokens * len(c.camera_names))
        return (placeholders + [self.tokenizer.bos_token_id]
                + self.tokenizer.encode(question + '\n', add_special_tokens=False))

    def target_ids(self, actions: np.ndarray) -> list:
        """The answer for one action (D,) in action-space units: bin text + EOS."""
        text = ' '.join(str(int(b)) for b in self.action_tokenizer.tokenize(actions))
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids + [self.tokenizer.eos_token_id]

    # ------------------------------------------------------------------ inference
    def generate_ids(self, observation: Observation) -> list:
        """Greedy, grammar-constrained answer tokens (EOS and anything after dropped)."""
        import torch
        from transformers import LogitsProcessorList

        from vla_ros.policies.rt2.modeling import GrammarLogitsProcessor

        prompt = torch.tensor([self.prompt_ids(observation.instruction)], device=self.device)
        n = prompt.shape[1]
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt),
                token_type_ids=torch.zeros_like(prompt),
                pixel_values=self.images_tensor(observation).flatten(0, 1),
                max_new_tokens=self.grammar.max_length, do_sample=False,
                logits_processor=LogitsProcessorList([GrammarLogitsProcessor(self.grammar, n)]),
                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.pad_id)
        answer = out[0, n:].tolist()
        eos = self.tokenizer.eos_token_id
        return answer[:answer.index(eos)] if eos in answer else answer

    def generate_action_text(self, observation: Observation) -> str:
        """The model's answer as text, e.g. ``'128 91 241 0 12 255 3'``."""
        return self.tokenizer.decode(self.generate_ids(observation), skip_special_tokens=True)

    def parse_action_text(self, text: str) -> np.ndarray:
        """Bin indices (D,) from the answer, or MalformedActionText saying what is wrong."""
        try:
            return text_to_bins(text, self.action_space.dim, self.config.num_bins)
        except MalformedActionText as exc:
            raise MalformedActionText(f'policy {self.family!r} produced unusable action text '
                                      f'{text!r}: {exc}') from None

    def predict_actions(self, observation: Observation) -> np.ndarray:
        """One action (1, D) in action-space units (the lower edge of each bin)."""
        bins = self.parse_action_text(self.generate_action_text(observation))
        return self.action_tokenizer.detokenize(bins)[None]

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """Validate, generate, parse strictly, detokenize (bins are over the bounds already)."""
        self.validate_observation(observation)
        return self.check_chunk(self.predict_actions(observation).astype(np.float32))

    def predict_normalized(self, observation: Observation) -> np.ndarray:
        """The same action in the checkpoint's normalized space (for tools comparing them)."""
        return self.normalizer.normalize(self.predict_actions(observation))

    # ------------------------------------------------------------------ training
    def training_loss(self, batch: dict):
        """Cross-entropy on the answer tokens of each row's first action.

        ``actions`` (B, T, D) are normalized; they are mapped back to action-space units
        and binned over the bounds as at inference. Rows whose first step is not ``valid``
        are skipped.
        """
        import torch

        from vla_ros.policies.rt2.modeling import answer_cross_entropy, training_sequences

        actions = np.asarray(torch.as_tensor(batch['actions']).detach().cpu().float())
        images = batch['images']
        cams, size = len(self.config.camera_names), self.config.image_size
        if actions.ndim != 3 or actions.shape[2] != self.action_space.dim or not actions.shape[1]:
            raise ValueError(f'rt2: actions must be (B, T>=1, {self.action_space.dim}), got '
                             f'{actions.shape}')
        if images.ndim != 5 or tuple(images.shape[1:]) != (cams, 3, size, size):
            raise ValueError(f'rt2: images must be (B, {cams}, 3, {size}, {size}), got '
                             f'{tuple(images.shape)}')
        if len(batch['instructions']) != len(actions):
            raise ValueError('rt2: one instruction per batch row is required')
        valid = batch.get('valid')
        rows = (np.arange(len(actions)) if valid is None
                else np.flatnonzero(np.asarray(torch.as_tensor(valid).cpu())[:, 0]))
        if not len(rows):
            raise ValueError('rt2: no row of the batch has a valid first action')
        units = self.normalizer.unnormalize(actions[rows, 0].astype(np.float64))
        prompts = [self.prompt_ids(batch['instructions'][i]) for i in rows]
        targets = [self.target_ids(a) for a in units]
        input_ids, attention, token_types, labels = (
            t.to(self.device) for t in training_sequences(prompts, targets, self.pad_id))
        pixels = images[torch.as_tensor(rows)].to(self.device, self.dtype).flatten(0, 1)
        logits = self.model(input_ids=input_ids, attention_mask=attention,
                            token_type_ids=token_types, pixel_values=pixels).logits
        return answer_cross_entropy(logits, labels)


def load(model_path: str = '', size: str = 'tiny', **kwargs) -> Rt2Policy:
    """Registry entry: a checkpoint directory if ``model_path`` is set, else a preset."""
    return Rt2Policy.load(model_path=model_path, size=size, **kwargs)
