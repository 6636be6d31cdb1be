"""The OpenVLA model: fused DINOv2 + SigLIP patches -> MLP projector -> Llama-2.

The layout follows Prismatic/OpenVLA: both vision encoders see the same image, their
patch features from the second-to-last layer are concatenated channel-wise, projected into
the Llama embedding width, and inserted right after the BOS token of the prompt. Module
names (``vision_backbone.featurizer``/``fused_featurizer``, ``projector.fc1..fc3``,
``language_model``) match OpenVLA's released modeling code.
"""

import torch
from torch import nn
from transformers import (
    Dinov2WithRegistersModel,
    GenerationMixin,
    LlamaForCausalLM,
    PreTrainedModel,
    SiglipVisionModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from vla_ros.policies.openvla.configuration_openvla import (
    DINO_MEAN,
    DINO_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    OpenVlaConfig,
)

IGNORE_INDEX = -100


class OpenVlaProjector(nn.Module):
    """Patch features -> LLM embeddings.

    ``fused-gelu-mlp`` is Prismatic's projector for fused DINOv2 + SigLIP features, the one
    OpenVLA-7B uses: Linear(v, 4v), GELU, Linear(4v, d), GELU, Linear(d, d).
    ``gelu-mlp`` is the two-layer variant: Linear(v, d), GELU, Linear(d, d).
    """

    def __init__(self, vision_dim: int, llm_dim: int, projector_type: str):
        """Create the layers for ``projector_type``."""
        super().__init__()
        self.act = nn.GELU()
        if projector_type == 'fused-gelu-mlp':
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
            self.fc3 = None

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, P, vision_dim) -> (B, P, llm_dim)."""
        x = self.fc2(self.act(self.fc1(patches)))
        return x if self.fc3 is None else self.fc3(self.act(x))


class OpenVlaProprioProjector(nn.Module):
    """Normalized proprio vector -> one LLM embedding (OpenVLA-OFT's proprio projector).

    Linear(p, d), GELU, Linear(d, d).
    """

    def __init__(self, proprio_dim: int, llm_dim: int):
        """Create the two layers."""
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        """(B, proprio_dim) -> (B, 1, llm_dim)."""
        return self.fc2(self.act(self.fc1(proprio)))[:, None]


def normalize_pixels(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, 3, H, W) [0, 1] RGB -> per-channel ``(x - mean) / std``."""
    m = torch.tensor(mean, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - m) / s


class OpenVlaVisionBackbone(nn.Module):
    """DINOv2 (``featurizer``) and SigLIP (``fused_featurizer``) on the same image."""

    def __init__(self, config: OpenVlaConfig):
        """Build both encoders from their sub-configurations (random initialisation)."""
        super().__init__()
        self.featurizer = Dinov2WithRegistersModel(config.dino_config)
        self.fused_featurizer = SiglipVisionModel(config.siglip_config)
        self.feature_layer = config.vision_feature_layer
        # DINOv2 prepends CLS and register tokens; Prismatic keeps patch tokens only.
        self.num_prefix_tokens = 1 + config.dino_config.num_register_tokens

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], (B, 3, H, W) -> fused patch features (B, P, dino + siglip).

        Each tower's normalization is computed in float32 and only its result cast to the
        weights' dtype, as OpenVLA's processor does (k / 255 is not exact in bfloat16).
        """
        dtype = self.featurizer.embeddings.patch_embeddings.projection.weight.dtype
        pixels = pixel_values.float()
        dino = self.featurizer(
            pixel_values=normalize_pixels(pixels, DINO_MEAN, DINO_STD).to(dtype),
            output_hidden_states=True).hidden_states[self.feature_layer]
        siglip = self.fused_featurizer(
            pixel_values=normalize_pixels(pixels, SIGLIP_MEAN, SIGLIP_STD).to(dtype),
            output_hidden_states=True).hidden_states[self.feature_layer]
        return torch.cat([dino[:, self.num_prefix_tokens:], siglip], dim=-1)


class OpenVlaPreTrainedModel(PreTrainedModel):
    """transformers plumbing shared by the OpenVLA model classes."""

    config_class = OpenVlaConfig
    config: OpenVlaConfig
    base_model_prefix = 'openvla'
    main_input_name = 'input_ids'
    input_modalities = ('image', 'text')
    supports_gradient_checkpointing = True
    _no_split_modules = ['LlamaDecoderLayer', 'Dinov2WithRegistersLayer', 'SiglipEncoderLayer']
    _supports_sdpa = True


class OpenVlaForActionPrediction(OpenVlaPreTrainedModel, GenerationMixin):
    """Image + prompt -> next-token logits over the (padded) Llama vocabulary."""

    def __init__(self, config: OpenVlaConfig):
        """Build the vision backbone, the projector and the Llama language model."""
        super().__init__(config)
        self._build(config)
        self.post_init()

    def _build(self, config: OpenVlaConfig) -> None:
        """Create the modules, in the order their random initialisation draws from the RNG.

        A variant adds its own between these steps (before ``post_init`` initialises all).
        """
        self._build_vision(config)
        self._build_language_model(config)

    def _build_vision(self, config: OpenVlaConfig) -> None:
        self.vision_backbone = OpenVlaVisionBackbone(config)
        self.projector = OpenVlaProjector(config.vision_dim, config.text_config.hidden_size,
                                          config.projector_type)
        self.proprio_projector = (
            OpenVlaProprioProjector(config.proprio_dim, config.text_config.hidden_size)
            if config.use_proprio else None)

    def _build_language_model(self, config: OpenVlaConfig) -> None:
        self.language_model = LlamaForCausalLM(config.text_config)

    def get_input_embeddings(self) -> nn.Module:
        """The Llama token embedding table."""
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the Llama token embedding table."""
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        """The Llama output head."""
        return self.language_model.get_output_embeddings()

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected patch embeddings (B, num_patches, llm_dim).

        ``pixel_values`` is (B, 3, H, W) for one camera or (B, cameras, 3, H, W): every
        camera goes through the same backbone and projector, and the patch tokens are
        concatenated camera after camera (OpenVLA-OFT's multi-image input).
        """
        if pixel_values.ndim == 5:
            b, c = pixel_values.shape[:2]
            patches = self.projector(self.vision_backbone(pixel_values.flatten(0, 1)))
            return patches.reshape(b, c * patches.shape[1], patches.shape[2])
        return self.projector(self.vision_backbone(pixel_values))

    def embed_inputs(self, input_ids: torch.Tensor,
                     pixel_values: torch.Tensor | None = None,
                     proprio: torch.Tensor | None = None,
                     features_out: dict | None = None) -> torch.Tensor:
        """Token embeddings with the image inserted after BOS.

        Inserted, in order: the image patches (camera after camera), a variant's readout
        tokens (:meth:`readout_tokens`; OpenVLA has none), the proprio token if
        ``use_proprio`` (which then requires ``proprio`` (B, proprio_dim), normalized).
        Nothing is inserted without ``pixel_values`` (cached decoding steps).
        ``features_out``, if a dict, receives what a variant's training losses read.
        """
        embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is None:
            return embeds
        if input_ids.shape[1] < 1:
            raise ValueError('the prompt must start with a BOS token before the image')
        patches = self.embed_images(pixel_values)  # the backbone normalizes in float32
        inserted = [patches, *self.readout_tokens(input_ids, embeds, pixel_values, patches,
                                                  features_out)]
        if self.proprio_projector is not None:
            if proprio is None:
                raise ValueError('this model uses proprio, but none was given')
            if proprio.shape != (input_ids.shape[0], self.config.proprio_dim):
                raise ValueError(f'proprio must be (batch, {self.config.proprio_dim}), got '
                                 f'{tuple(proprio.shape)}')
            inserted.append(self.proprio_projector(proprio.to(embeds.dtype)))
        return torch.cat([embeds[:, :1], *inserted, embeds[:, 1:]], dim=1)

    def readout_tokens(self, input_ids, embeds, pixel_values, patches,
                       features_out: dict | None) -> list[torch.Tensor]:
        """Tokens (B, n, dim) a variant inserts between the patches and proprio: none here."""
        del input_ids, embeds, pixel_values, patches, features_out
        return []

    def forward(self, input_ids: torch.LongTensor | None = None,
                pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, cache=None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, position_ids=None,
                proprio: torch.Tensor | None = None, **kwargs):
        """Multimodal forward; also the step function ``generate`` calls.

        ``pixel_values`` (RGB in [0, 1]) are given on the prefill only; later steps reuse
        the cache. ``attention_mask`` and ``labels`` cover the text tokens: positions of
        the inserted patches are added here (attended, never predicted). ``position_ids``
        from ``generate`` count text tokens only, so they are recomputed from the mask.
        With ``labels`` the output head runs only where a label is set: ``logits`` are then
        (N supervised tokens, vocab) and ``loss`` their mean cross-entropy, equal to the
        usual shifted loss at a fraction of the cost (7 of ~90 positions in OpenVLA); the
        other keyword arguments are then a variant's training targets
        (:meth:`add_auxiliary_losses`).
        """
        del position_ids
        if input_ids is None:
            raise ValueError('input_ids are required')
        features = {}
        embeds = self.embed_inputs(input_ids, pixel_values, proprio, features)
        inserted = embeds.shape[1] - input_ids.shape[1]
        if labels is not None and inserted:
            ignore = labels.new_full((labels.shape[0], inserted), IGNORE_INDEX)
            labels = torch.cat([labels[:, :1], ignore, labels[:, 1:]], dim=1)
        past = cache.get_seq_length() if cache is not None else 0
        mask, positions = None, None
        if attention_mask is not None:
            mask = self._full_attention_mask(attention_mask, past + embeds.shape[1])
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1]:]
        if labels is not None:
            out, state = self._supervised_loss(embeds, mask, positions, labels)
            out.loss = self.add_auxiliary_losses(out.loss, state, features, pixel_values,
                                                 kwargs)
            return out
        return self.language_model(inputs_embeds=embeds, attention_mask=mask,
                                   position_ids=positions, cache=cache, use_cache=use_cache,
                                   logits_to_keep=logits_to_keep, **kwargs)

    def add_auxiliary_losses(self, loss: torch.Tensor, state: torch.Tensor, features: dict,
                             pixel_values: torch.Tensor | None, targets: dict) -> torch.Tensor:
        """``loss`` plus a variant's training-only terms; OpenVLA has none and takes none.

        ``state`` (B, dim) is the hidden state that predicts each row's first supervised
        token, ``features`` what :meth:`embed_inputs` collected, ``targets`` the extra
        keyword arguments given to ``forward`` with ``labels``.
        """
        del state, features, pixel_values
        if targets:
            raise TypeError(f'{type(self).__name__} takes no training targets besides the '
                            f'labels; got {sorted(targets)}')
        return loss

    def _supervised_loss(self, embeds, mask, positions, labels):
        """Loss over the supervised tokens, and the state the first action is read from.

        Returns the output (loss, logits) and each row's final hidden state (B, dim) at the
        position that predicts its first supervised token.
        """
        hidden = self.language_model.model(inputs_embeds=embeds, attention_mask=mask,
                                           position_ids=positions,
                                           use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        if not keep.any():
            raise ValueError('labels contain no supervised token')
        first = keep.int().argmax(dim=1)
        state = hidden[:, :-1][torch.arange(len(first), device=first.device), first]
        logits = self.language_model.lm_head(hidden[:, :-1][keep]).float()
        loss = self.token_loss(logits, targets[keep])
        return CausalLMOutputWithPast(loss=loss, logits=logits), state

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the supervised tokens (N, vocab) against their ids (N,)."""
        return nn.functional.cross_entropy(logits, targets)

    def _full_attention_mask(self, mask: torch.Tensor, total: int) -> torch.Tensor:
        """Text mask -> mask over cache + input, with ones for the inserted embeddings."""
        if mask.shape[1] == total:
            return mask
        patches = self.config.num_inserted_tokens
        if mask.shape[1] + patches != total:
            raise ValueError(f'attention_mask covers {mask.shape[1]} tokens; expected {total} '
                             f'or {total - patches} (text tokens without the image patches)')
        ones = mask.new_ones((mask.shape[0], patches))
        return torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)
