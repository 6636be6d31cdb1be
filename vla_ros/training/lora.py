"""LoRA adapters (peft) on a policy's model: target selection, injection, merging.

Adapters are injected into the policy's own ``nn.Module`` in place, so a family's
``training_loss`` runs unchanged through them. Before a checkpoint is written the
adapters are merged into the base weights, so every saved checkpoint is an ordinary one
of its family (no peft needed to load it).
"""

import copy
from dataclasses import dataclass

# The attention and MLP projections of Llama-style language models (as in OpenVLA's LoRA
# recipe); used when present and no targets are given.
DEFAULT_TARGETS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')


@dataclass(frozen=True)
class LoraSettings:
    """Rank, scaling and dropout of the adapters, and which Linear layers get them."""

    rank: int = 8
    alpha: float | None = None  # None -> 2 * rank
    dropout: float = 0.05
    targets: tuple[str, ...] = ()  # empty -> DEFAULT_TARGETS present in the model

    def __post_init__(self):
        if isinstance(self.rank, bool) or int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f'LoRA rank must be an integer >= 1, got {self.rank!r}')
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f'LoRA alpha must be > 0, got {self.alpha!r}')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'LoRA dropout must be in [0, 1), got {self.dropout!r}')
        object.__setattr__(self, 'targets', tuple(t.strip() for t in self.targets if t.strip()))

    @property
    def scaled_alpha(self) -> float:
        """The alpha actually used."""
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    def to_dict(self) -> dict:
        """JSON form (stored with the run so --resume can check it)."""
        return {'rank': int(self.rank), 'alpha': self.scaled_alpha,
                'dropout': float(self.dropout), 'targets': list(self.targets)}


def linear_layer_names(model) -> dict[str, int]:
    """Last name component of every ``nn.Linear`` in ``model`` -> how many there are."""
    from torch import nn

    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name:
            short = name.rsplit('.', 1)[-1]
            counts[short] = counts.get(short, 0) + 1
    return counts


def _available(counts: dict[str, int]) -> str:
    return ', '.join(f'{n} (x{c})' if c > 1 else n for n, c in sorted(counts.items()))


def resolve_targets(model, targets: tuple[str, ...] = ()) -> list[str]:
    """Linear layer names to adapt: the requested ones (all must exist) or the defaults."""
    counts = linear_layer_names(model)
    if not counts:
        raise ValueError('the model has no nn.Linear layers: LoRA cannot be applied; use --full')
    if targets:
        unknown = [t for t in targets if t not in counts]
        if unknown:
            raise ValueError(f'LoRA targets {unknown} match no Linear layer; available Linear '
                             f'layers: {_available(counts)}')
        return list(targets)
    present = [t for t in DEFAULT_TARGETS if t in counts]
    if not present:
        raise ValueError(f'the model has none of the default LoRA targets '
                         f'({",".join(DEFAULT_TARGETS)}); pass --lora-targets with some of its '
                         f'Linear layers: {_available(counts)}')
    return present


class LoraAdapters:
    """peft LoRA injected in place into ``model``; everything else is frozen."""

    def __init__(self, model, settings: LoraSettings):
        """Inject adapters into the resolved targets of ``model``."""
        from peft import LoraConfig, get_peft_model

        self.settings = settings
        self.targets = resolve_targets(model, settings.targets)
        config = LoraConfig(r=int(settings.rank), lora_alpha=settings.scaled_alpha,
                            lora_dropout=float(settings.dropout), target_modules=self.targets,
                            bias='none')
        self._peft = get_peft_model(model, config)
        self.model = model  # same object, now containing the adapter layers

    def adapter_state(self) -> dict:
        """The trainable (adapter) tensors by parameter name."""
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}

    def load_adapter_state(self, state: dict) -> None:
        """Restore adapter tensors saved by :meth:`adapter_state` (names must match)."""
        import torch

        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if set(params) != set(state):
            missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise ValueError(f'adapter tensors do not match the model (missing {missing[:3]}, '
                             f'unexpected {extra[:3]}): same --lora-* settings as the run?')
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)

    def merged_copy(self):
        """A deep copy of the model with the adapters merged; the live model is untouched."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        model = copy.deepcopy(self.model)
        for name, module in list(model.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge()
                parent_name, _, child = name.rpartition('.')
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, child, module.get_base_layer())
        return model

    def merge_and_unload(self):
        """Merge the adapters into the base weights and remove them (in place)."""
        return self._peft.merge_and_unload()
