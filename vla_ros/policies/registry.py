"""Policy registry: names -> lazily imported policy classes or factories.

Entries are ``"module:attribute"`` strings so that heavy dependencies (torch,
transformers) are imported only when a policy that needs them is actually made. Classes in
modules that are already imported can also register with the :func:`registered`
decorator.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from vla_ros.policies.contract import Policy, PolicyLoadError

T = TypeVar('T')


@dataclass(frozen=True)
class PolicyInfo:
    """A registry entry: ``target`` is ``"module:attribute"`` of a Policy class/factory."""

    name: str
    target: str
    description: str = ''
    family: str = ''
    # Built from random weights when no checkpoint is given (a loud warning at run time).
    learned: bool = False


# Built-in entries; model families add their line here (their modules import torch lazily).
_BUILTINS = (
    PolicyInfo(
        'scripted',
        'vla_ros.policies.scripted:ScriptedPolicy',
        'Deterministic scripted chunks for runtime tests (no model).',
        'scripted',
    ),
    PolicyInfo('pi0', 'vla_ros.policies.lerobot_pi.policy:load_pi0',
               'pi0: a LeRobot checkpoint (model_path, tokenizer_path): PaliGemma prefix + '
               'Gemma-300M flow-matching expert.', 'pi0'),
    PolicyInfo('pi05', 'vla_ros.policies.lerobot_pi.policy:load_pi05',
               'pi0.5: a LeRobot checkpoint (model_path, tokenizer_path): state as prompt '
               'tokens, adaRMS time conditioning.', 'pi05'),
    PolicyInfo('pi0_style', 'vla_ros.policies.pi0.policy:load',
               'pi0-style: PaliGemma-style prefix + flow-matching action expert, 50-step '
               'chunks.', 'pi0_style', learned=True),
    PolicyInfo('rt2', 'vla_ros.policies.rt2.policy:load',
               'RT-2-style: PaliGemma VLM writing 7 bin indices as text, constrained '
               'decoding.', 'rt2', learned=True),
    PolicyInfo('octo', 'vla_ros.policies.octo.policy:load',
               'Octo-style: patch tokens + readouts under a block-wise mask, diffusion '
               'head, 4-step chunks.', 'octo', learned=True),
    PolicyInfo('rt1', 'vla_ros.policies.rt1.policy:load',
               'RT-1: FiLM-EfficientNet-B3 + TokenLearner + Transformer over 6 frames, '
               '256-bin heads per action dimension.', 'rt1', learned=True),
    PolicyInfo('openvla', 'vla_ros.policies.openvla.policy:load',
               'OpenVLA: DINOv2 + SigLIP -> MLP -> Llama-2, 7 greedy action tokens '
               '(256 bins), q01/q99 statistics per dataset.', 'openvla', learned=True),
    PolicyInfo('openvla_sim', 'vla_ros.policies.openvla_sim.policy:load',
               "OpenVLA's simulation variant (the shipped openvla_sim): readout tokens per "
               'camera, simulator-truth training probes; presets sim_base, sim, sim_pixel.',
               'openvla', learned=True),
    PolicyInfo('smolvla', 'vla_ros.policies.smolvla.policy:load',
               'SmolVLA (LeRobot checkpoints): SmolVLM2 prefix + interleaved action expert, '
               'flow matching, 50-step chunks.', 'smolvla', learned=True),
)

_lock = threading.Lock()
_entries: dict[str, PolicyInfo] = {}
# Objects registered via the decorator; resolving them needs no import (and works for
# classes whose qualname is not importable, e.g. defined inside a test function).
_objects: dict[str, Callable[..., Any]] = {}


def _split_target(target: str) -> tuple[str, str]:
    module, sep, attr = target.partition(':')
    if not sep or not module or not attr:
        raise ValueError(f'policy target must be "module:attribute", got {target!r}')
    return module, attr


def register_policy(
    name: str,
    target: str,
    description: str = '',
    family: str = '',
    *,
    replace: bool = False,
    learned: bool = False,
) -> PolicyInfo:
    """Register ``name`` -> ``target`` ("module:attribute"); nothing is imported now.

    Re-registering the same name with the same target is a no-op; a different target
    raises ValueError unless ``replace`` is true.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f'policy name must be a non-empty string, got {name!r}')
    _split_target(target)
    info = PolicyInfo(name, target, description, family or name, learned)
    with _lock:
        old = _entries.get(name)
        if old is not None and old.target != target and not replace:
            raise ValueError(
                f'policy {name!r} is already registered as {old.target!r}; '
                f'pass replace=True to override'
            )
        _entries[name] = info
        _objects.pop(name, None)
    return info


def registered(
    name: str, description: str = '', family: str = '', *, replace: bool = False
) -> Callable[[T], T]:
    """Class decorator form of :func:`register_policy` for already-imported modules."""

    def decorate(obj: T) -> T:
        target = f'{obj.__module__}:{obj.__qualname__}'  # type: ignore[attr-defined]
        doc = description or (obj.__doc__ or '').strip().split('\n')[0]
        register_policy(name, target, doc, family, replace=replace)
        with _lock:
            _objects[name] = obj  # type: ignore[assignment]
        return obj

    return decorate


def unregister_policy(name: str) -> None:
    """Remove ``name`` from the registry (mainly for tests); unknown names are ignored."""
    with _lock:
        _entries.pop(name, None)
        _objects.pop(name, None)


def available_policies() -> list[str]:
    """Sorted names of all registered policies."""
    with _lock:
        return sorted(_entries)


def _unknown(name: Any) -> ValueError:
    return ValueError(f'unknown policy {name!r}; available: {", ".join(available_policies())}')


def policy_info(name: str) -> PolicyInfo:
    """Return the registry entry of ``name`` (ValueError listing names if unknown)."""
    with _lock:
        info = _entries.get(name)
    if info is None:
        raise _unknown(name)
    return info


def resolve_policy(name: str) -> Callable[..., Any]:
    """Import and return the class/factory registered as ``name``.

    Raises ValueError for an unknown name and PolicyLoadError if the module or attribute
    cannot be imported (typically a missing optional dependency of that family).
    """
    info = policy_info(name)
    with _lock:
        obj = _objects.get(name)
    if obj is not None:
        return obj
    module_name, attr = _split_target(info.target)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PolicyLoadError(
            f'policy {name!r}: cannot import module {module_name!r}: {e} '
            f'(is the {info.family!r} family\'s dependency installed?)'
        ) from e
    obj = module
    try:
        for part in attr.split('.'):
            obj = getattr(obj, part)
    except AttributeError:
        raise PolicyLoadError(
            f'policy {name!r}: module {module_name!r} has no attribute {attr!r}'
        ) from None
    if not callable(obj):
        raise PolicyLoadError(f'policy {name!r}: {info.target!r} is not callable')
    return obj


def make_policy(name: str, **config: Any) -> Policy:
    """Construct the policy registered as ``name`` with keyword ``config``.

    Unknown name -> ValueError listing available names; import failures ->
    PolicyLoadError naming the module. Errors raised by the constructor propagate.
    ``instruction_set`` (any policy; see
    :func:`vla_ros.policies.instruction_retrieval.wrap_policy`) puts the policy behind
    retrieval of the nearest known instruction.
    """
    instruction_set = config.pop('instruction_set', None)
    factory = resolve_policy(name)
    policy = factory(**config)
    if not isinstance(policy, Policy):
        raise PolicyLoadError(
            f'policy {name!r}: {policy_info(name).target!r} returned '
            f'{type(policy).__name__}, not a Policy'
        )
    if instruction_set:
        from vla_ros.policies.instruction_retrieval import wrap_policy

        try:
            policy = wrap_policy(policy, instruction_set, config.get('model_path'))
        except BaseException:
            policy.close()
            raise
    return policy


for _info in _BUILTINS:
    register_policy(_info.name, _info.target, _info.description, _info.family,
                    learned=_info.learned)
del _info
