"""The training loop: AdamW, warmup + cosine schedule, clipping, checkpoints, resumption.

Output directory layout::

    OUTPUT/config.json, model.safetensors, dataset_statistics.json   final policy
    OUTPUT/train_config.json                                         how the run was made
    OUTPUT/training_summary.json                                     the printed summary
    OUTPUT/checkpoints/step_00000050/policy/                         a loadable checkpoint
    OUTPUT/checkpoints/step_00000050/trainer_state.safetensors       optimizer, RNG, adapters
    OUTPUT/checkpoints/step_00000050/trainer_state.json              step, schedule, losses

Nothing is pickled. A resumed run restores weights, optimizer, scheduler and every RNG,
and batches are a pure function of (seed, step), so it ends with the same weights as an
uninterrupted run. With LoRA, checkpoints hold merged weights (loadable without peft)
and the trainer state holds the adapters; resuming rebuilds the same base model (same
--policy/--size/--model-path/--seed, checked against train_config.json).
"""

import copy
import dataclasses
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.policies.instruction_retrieval import write_instruction_set
from vla_ros.training.data import (
    batch_indices,
    bounded_statistics,
    check_compatible,
    collate,
    history_sampling,
    install_statistics,
    load_dataset,
)
from vla_ros.training.lora import LoraSettings

CHECKPOINTS = 'checkpoints'
POLICY_DIR = 'policy'
STATE_TENSORS = 'trainer_state.safetensors'
STATE_JSON = 'trainer_state.json'
RUN_CONFIG = 'train_config.json'
SUMMARY = 'training_summary.json'
# Settings that must not change when a run is resumed (they change the result).
RESUME_KEYS = ('policy', 'size', 'model_options', 'model_path', 'init_weights', 'steps',
               'batch_size', 'lr', 'weight_decay', 'warmup_steps', 'max_grad_norm', 'seed',
               'lora', 'unnorm_key', 'counterfactual', 'keep_statistics',
               'relabel_from_state', 'done_label', 'done_hold_steps', 'history_stride')


class TrainingError(RuntimeError):
    """A run cannot start or continue (existing output, nothing to resume, bad loss)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run; validated on construction."""

    policy: str
    output: str
    data: str = ''
    size: str = 'tiny'
    model_path: str = ''
    # A checkpoint whose tensors start the ``size`` preset's model wherever names and
    # shapes match (modules the checkpoint lacks keep their fresh initialisation).
    init_weights: str = ''
    # Configuration fields changed from the ``size`` preset (e.g. {'target_readout': True}).
    model_options: dict = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int | None = None  # None -> 5 % of the steps
    max_grad_norm: float = 1.0
    seed: int = 0
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # None = full fine-tune
    checkpoint_every: int = 100  # 0 -> only at the end (and at stop_after)
    keep_checkpoints: int = 3  # 0 -> keep all
    unnorm_key: str = 'default'
    device: str = 'cpu'
    eval_samples: int = 32
    # > 0: add a counterfactual sample for this fraction of the relabelable frames: the
    # same images with another object named and the scripted expert's action for it
    # (vla_ros.training.counterfactual).
    counterfactual: float = 0.0
    # Keep the normalization statistics of the --model-path / --init-weights checkpoint
    # (entry ``unnorm_key``) instead of computing them from --data: continuing a model on
    # more data of the same task then keeps the meaning of its action bins.
    keep_statistics: bool = False
    # Label the simulated reach and pick-up approach frames anew with the current scripted
    # expert, from each frame's state alone (vla_ros.training.counterfactual).
    relabel_from_state: bool = False
    # Append each frame's done label as a terminate dimension (vla_ros.training.done_label):
    # the policy learns to say when the task is complete. Needs a checkpoint on the
    # extended space (`python -m vla_ros.training.done_label SRC OUT` grows one).
    done_label: bool = False
    # With done_label: a frame is labelled done only once the task has stayed achieved for
    # this many consecutive frames (0: from the first achieved frame). A stop learnt on the
    # first achieved frame fires on the frames around it too (a grasp just before the lift
    # looks like the lift), and a stop holds the robot, so the label waits for a settled
    # success (vla_ros.training.done_label.settled_done).
    done_hold_steps: int = 0
    # Control ticks between the frames of a history window (policies that see several
    # frames, e.g. Octo, RT-1): the ticks between two inferences at run time. 0 -> the
    # default schedule of ``vla-ros eval`` (receding horizon: min(5, chunk_length)).
    history_stride: int = 0
    # LoRA on a preset no checkpoint initialised leaves the frozen base random: refused
    # unless allowed (``vla-ros train`` refuses by default), and warned about when allowed.
    allow_untrained_base: bool = True

    def __post_init__(self):
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')

        if not self.policy:
            raise ValueError('policy is required')
        if not self.output:
            raise ValueError('output directory is required')
        positive_int('steps')
        positive_int('batch_size')
        positive_int('checkpoint_every', 0)
        positive_int('keep_checkpoints', 0)
        positive_int('eval_samples')
        positive_int('seed', 0)
        positive_int('history_stride', 0)
        if self.warmup_steps is None:
            self.warmup_steps = int(0.05 * self.steps)
        positive_int('warmup_steps', 0)
        if self.warmup_steps >= self.steps:
            raise ValueError(f'warmup_steps ({self.warmup_steps}) must be < steps ({self.steps})')
        for name in ('lr', 'max_grad_norm'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be a positive number, got {value!r}')
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f'weight_decay must be >= 0, got {self.weight_decay!r}')
        if not self.unnorm_key:
            raise ValueError('unnorm_key must be a non-empty name')
        if isinstance(self.counterfactual, bool) \
                or not isinstance(self.counterfactual, (int, float)) \
                or not 0.0 <= self.counterfactual <= 1.0:
            raise ValueError(f'counterfactual must be a rate in [0, 1], got '
                             f'{self.counterfactual!r}')
        if not isinstance(self.relabel_from_state, bool):
            raise ValueError(f'relabel_from_state must be true or false, got '
                             f'{self.relabel_from_state!r}')
        if not isinstance(self.done_label, bool):
            raise ValueError(f'done_label must be true or false, got {self.done_label!r}')
        if isinstance(self.done_hold_steps, bool) or not isinstance(self.done_hold_steps, int) \
                or self.done_hold_steps < 0:
            raise ValueError(f'done_hold_steps must be an integer >= 0, got '
                             f'{self.done_hold_steps!r}')
        if self.done_hold_steps and not self.done_label:
            raise ValueError('done_hold_steps needs done_label')
        if not isinstance(self.keep_statistics, bool):
            raise ValueError(f'keep_statistics must be true or false, got '
                             f'{self.keep_statistics!r}')
        if self.keep_statistics and not (self.model_path or self.init_weights):
            raise ValueError('keep_statistics needs model_path or init_weights (the checkpoint '
                             'whose statistics are kept)')
        if self.init_weights and self.model_path:
            raise ValueError('init_weights and model_path are exclusive (a checkpoint to '
                             'fine-tune fixes its own architecture)')
        if self.model_options and self.model_path:
            raise ValueError('model options and model_path are exclusive (a checkpoint to '
                             'fine-tune fixes its own configuration)')

    @property
    def mode(self) -> str:
        """'lora' or 'full'."""
        return 'full' if self.lora is None else 'lora'

    def to_dict(self) -> dict:
        """JSON form (train_config.json)."""
        d = dataclasses.asdict(self)
        d['lora'] = None if self.lora is None else self.lora.to_dict()
        d['mode'] = self.mode
        return d


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay towards 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# ------------------------------------------------------------------ checkpoint files
def latest_checkpoint(output: str | Path) -> Path | None:
    """The newest complete checkpoint directory (trainer_state.json written last)."""
    root = Path(output) / CHECKPOINTS
    done = [p for p in root.glob('step_*') if p.is_dir() and (p / STATE_JSON).is_file()
            and p.name[5:].isdigit()]
    return max(done, key=lambda p: int(p.name[5:]), default=None)


def _optimizer_to_files(optimizer) -> tuple[dict, dict]:
    import torch

    sd = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, state in sd['state'].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f'optimizer.{index}.{key}'] = value.detach().cpu().contiguous()
            else:
                plain[f'{index}.{key}'] = value
    return tensors, {'param_groups': sd['param_groups'], 'plain': plain}


def _optimizer_from_files(optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith('optimizer.'):
            _, index, key = name.split('.', 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta['plain'].items():
        index, key = name.split('.', 1)
        state.setdefault(int(index), {})[key] = value
    groups = [dict(g, betas=tuple(g['betas'])) if 'betas' in g else g
              for g in meta['param_groups']]
    optimizer.load_state_dict({'state': state, 'param_groups': groups})


def _rng_to_files() -> tuple[dict, dict]:
    import torch

    tensors = {'rng.torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f'rng.cuda.{i}'] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors['rng.numpy_keys'] = torch.from_numpy(keys.astype(np.int64))
    version, py_state, py_gauss = random.getstate()
    meta = {'numpy': [kind, int(pos), int(has_gauss), float(gauss)],
            'python': [version, list(py_state), py_gauss]}
    return tensors, meta


def _rng_from_files(tensors: dict, meta: dict) -> None:
    import torch

    torch.set_rng_state(tensors['rng.torch'])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith('rng.cuda.')]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = meta['numpy']
    np.random.set_state((kind, tensors['rng.numpy_keys'].numpy().astype(np.uint32), pos,
                         has_gauss, gauss))
    version, py_state, py_gauss = meta['python']
    random.setstate((version, tuple(py_state), py_gauss))


def initialise_matching(policy, path: str | Path) -> dict:
    """Copy a checkpoint's tensors into ``policy.model`` wherever name and shape match.

    For growing a trained model by a module: everything the checkpoint has keeps its
    trained value, the rest its fresh initialisation. The checkpoint is loaded by its own
    family's loader (so transformers' renaming of older parameter names applies). Returns
    counts and the names of the tensors left fresh, for the run summary. A checkpoint
    sharing nothing is an error.
    """
    from vla_ros.policies.contract import PolicyLoadError
    from vla_ros.policies.registry import make_policy

    source = make_policy(policy.family, model_path=str(path)).model.state_dict()
    own = policy.model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise PolicyLoadError(f'--init-weights: no tensor of {path} matches the model')
    policy.model.load_state_dict(matched, strict=False)
    return {'from': str(path), 'loaded': len(matched),
            'fresh': sorted(set(own) - set(matched)),
            'ignored': sorted(set(source) - set(matched))}


def _load_buffers(model, state: dict) -> None:
    import torch

    buffers = dict(model.named_buffers())
    if set(buffers) != set(state):
        raise TrainingError(f'checkpoint buffers do not match the model (missing '
                            f'{sorted(set(buffers) - set(state))[:3]}, unexpected '
                            f'{sorted(set(state) - set(buffers))[:3]})')
    with torch.no_grad():
        for name, value in state.items():
            buffers[name].copy_(value)


# ------------------------------------------------------------------ the run
class Trainer:
    """One training run of a registered torch policy on an episode dataset."""

    def __init__(self, config: TrainConfig, dataset=None, progress: bool = True):
        """Prepare (nothing heavy happens until :meth:`run`)."""
        self.config = config
        self.dataset = dataset
        self.progress = progress
        self.output = Path(config.output).expanduser()
        self.initialised = None  # what initialise_matching copied (--init-weights)

    # -------------------------------------------------------------- set-up
    def _build_policy(self, checkpoint: Path | None):
        from vla_ros.policies.registry import make_policy, resolve_policy
        from vla_ros.policies.torch_policy import TorchPolicy

        c = self.config
        factory = resolve_policy(c.policy)
        # A class or a classmethod tells before building whether there is a model to train.
        owner = factory if isinstance(factory, type) else getattr(factory, '__self__', None)
        if isinstance(owner, type) and not issubclass(owner, TorchPolicy):
            raise ValueError(f'policy {c.policy!r} has no trainable model (it is a '
                             f'{owner.__name__}, not a TorchPolicy)')
        kwargs = {'seed': c.seed, 'device': c.device}
        if checkpoint is not None and c.lora is None:
            policy = make_policy(c.policy, model_path=str(checkpoint / POLICY_DIR), **kwargs)
        elif c.model_path:
            policy = make_policy(c.policy, model_path=c.model_path, **kwargs)
        else:
            policy = make_policy(c.policy, size=c.size, **c.model_options, **kwargs)
        if not isinstance(policy, TorchPolicy):
            raise ValueError(f'policy {c.policy!r} has no trainable model (it is a '
                             f'{type(policy).__name__}, not a TorchPolicy)')
        if c.init_weights and checkpoint is None:
            self.initialised = initialise_matching(policy, c.init_weights)
        problem = untrained_lora_problem(c) if checkpoint is None else ''
        if problem and not c.allow_untrained_base:
            raise ValueError(f'{problem}. Use --full to train the preset from scratch, '
                             f'--model-path CKPT to adapt a trained checkpoint, or '
                             f'--allow-untrained-base to train adapters on the random base '
                             f'anyway')
        if problem:
            print(f'WARNING: {problem}', file=sys.stderr, flush=True)
        if str(policy.dtype) != 'torch.float32':
            raise ValueError(f'training needs float32 weights, got {policy.dtype}')
        return policy

    def _check_output(self, resume: bool) -> Path | None:
        c, out = self.config, self.output
        if not resume:
            # A run that died before its first checkpoint left only train_config.json: it
            # may be started again; anything with weights is never overwritten.
            used = [str(p.relative_to(out)) for p in (latest_checkpoint(out),
                                                      out / 'model.safetensors')
                    if p is not None and p.exists()]
            if used:
                raise TrainingError(f'{out} already holds a training run ({", ".join(used)}); '
                                    f'pass --resume to continue it or choose a new --output')
            return None
        checkpoint = latest_checkpoint(out)
        if checkpoint is None:
            raise TrainingError(f'--resume: no checkpoint in {out / CHECKPOINTS}')
        try:
            saved = json.loads((out / RUN_CONFIG).read_text())
        except (OSError, ValueError) as exc:
            raise TrainingError(f'--resume: {out / RUN_CONFIG} is unreadable: {exc}') from None
        now = c.to_dict()
        # A run started before a setting existed had that setting's default.
        defaults = TrainConfig(policy='-', output='-').to_dict()
        changed = [f'{k}: {saved.get(k, defaults[k])!r} -> {now.get(k)!r}' for k in RESUME_KEYS
                   if saved.get(k, defaults[k]) != now.get(k)]
        if changed:
            raise TrainingError('--resume with different settings than the run was started '
                                'with: ' + '; '.join(changed))
        return checkpoint

    def _checkpoint_statistics(self):
        """The ``unnorm_key`` entry of the source checkpoint's statistics, alone."""
        from vla_ros.actions.normalization import DatasetStatistics, load_statistics
        from vla_ros.policies.torch_policy import STATISTICS_FILE

        c = self.config
        path = Path(c.model_path or c.init_weights).expanduser() / STATISTICS_FILE
        if not path.is_file():
            raise TrainingError(f'keep_statistics: {path} does not exist')
        saved = load_statistics(path)
        if c.unnorm_key not in saved:
            raise TrainingError(f'keep_statistics: {path} has no entry {c.unnorm_key!r} '
                                f'(it has {sorted(saved.keys())}); pass --unnorm-key')
        return DatasetStatistics({c.unnorm_key: saved.select(c.unnorm_key)})

    def _eval_loss(self, policy, samples, indices) -> float:
        """Mean loss over a fixed sample set, eval mode, fixed noise, RNG left untouched."""
        import torch

        policy.model.eval()
        losses = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.config.seed)
            for start in range(0, len(indices), self.config.batch_size):
                chunk = indices[start:start + self.config.batch_size]
                batch = collate(policy, [samples[i] for i in chunk])
                losses.append(float(policy.training_loss(batch)) * len(chunk))
        return sum(losses) / len(indices)

    # -------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, step, policy, adapters, optimizer, scheduler, state) -> Path:
        from safetensors.torch import save_file

        from vla_ros.file_modes import respect_umask

        final = self.output / CHECKPOINTS / f'step_{step:08d}'
        tmp = final.with_name(final.name + '.tmp')
        shutil.rmtree(tmp, ignore_errors=True)
        if adapters is None:
            policy.save_pretrained(tmp / POLICY_DIR)
        else:
            shell = copy.copy(policy)  # same config/statistics, merged copy of the model
            shell.model = adapters.merged_copy()
            shell.save_pretrained(tmp / POLICY_DIR)
        tensors, optimizer_meta = _optimizer_to_files(optimizer)
        rng_tensors, rng_meta = _rng_to_files()
        tensors.update(rng_tensors)
        if adapters is not None:
            # The frozen base is rebuilt on resume; its buffers (BatchNorm running
            # statistics) still move in train mode, so they are kept with the adapters.
            tensors.update({f'adapter.{k}': v.cpu().contiguous()
                            for k, v in adapters.adapter_state().items()})
            tensors.update({f'buffer.{k}': v.detach().cpu().contiguous()
                            for k, v in policy.model.named_buffers()})
        save_file(tensors, str(tmp / STATE_TENSORS))
        respect_umask(tmp)  # save_file writes 0600
        meta = dict(state, step=step, optimizer=optimizer_meta,
                    scheduler=scheduler.state_dict(), rng=rng_meta)
        (tmp / STATE_JSON).write_text(json.dumps(meta))  # last: marks the checkpoint complete
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        self._prune()
        return final

    def _prune(self) -> None:
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        done = sorted((p for p in (self.output / CHECKPOINTS).glob('step_*')
                       if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    # -------------------------------------------------------------- main loop
    def run(self, resume: bool = False, stop_after: int | None = None) -> dict:
        """Train (or continue) and return the summary; ``stop_after`` ends this call early.

        With ``stop_after = k`` at most k steps are run in this call and a checkpoint is
        written where it stops, so a later ``run(resume=True)`` continues from there.
        """
        import torch
        from safetensors.torch import load_file

        c = self.config
        started = time.monotonic()
        if stop_after is not None and stop_after < 1:
            raise ValueError(f'stop_after must be >= 1, got {stop_after!r}')
        checkpoint = self._check_output(resume)
        dataset = self.dataset if self.dataset is not None else load_dataset(c.data)
        relabelled = None
        if c.relabel_from_state:
            from vla_ros.training.counterfactual import relabel_from_state

            dataset, relabelled = relabel_from_state(dataset, progress=self.progress)
        if c.done_label:
            from vla_ros.training.done_label import add_done_dimension

            dataset = add_done_dimension(dataset, hold_steps=c.done_hold_steps)
        policy = self._build_policy(checkpoint)
        samples = list(dataset.samples(policy.spec.chunk_length, **history_sampling(
            policy, c.history_stride)))
        check_compatible(policy, dataset, samples[0])
        recorded = len(samples)
        if c.counterfactual:
            from vla_ros.training.counterfactual import counterfactual_samples

            extra = counterfactual_samples(dataset, policy.spec.chunk_length, seed=c.seed,
                                           rate=c.counterfactual, progress=self.progress)
            if c.done_label:
                from vla_ros.training.done_label import pad_done

                extra = pad_done(extra, policy.action_space.dim)
            samples += extra
        if c.keep_statistics:
            statistics = self._checkpoint_statistics()
        else:
            statistics = bounded_statistics(dataset.statistics(c.unnorm_key),
                                            policy.action_space)
        install_statistics(policy, statistics, c.unnorm_key)

        adapters = None
        if c.lora is not None:
            from vla_ros.training.lora import LoraAdapters

            adapters = LoraAdapters(policy.model, c.lora)
        params = [p for p in policy.model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError(f'policy {c.policy!r} has no trainable parameters')
        optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        warmup, total = c.warmup_steps, c.steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, warmup, total))
        eval_indices = np.random.default_rng([c.seed, 1]).permutation(len(samples))
        eval_indices = eval_indices[:c.eval_samples]

        if checkpoint is not None:
            tensors = load_file(str(checkpoint / STATE_TENSORS))
            meta = json.loads((checkpoint / STATE_JSON).read_text())
            if adapters is not None:
                adapters.load_adapter_state({k[len('adapter.'):]: v for k, v in tensors.items()
                                             if k.startswith('adapter.')})
                _load_buffers(policy.model, {k[len('buffer.'):]: v for k, v in tensors.items()
                                             if k.startswith('buffer.')})
            _optimizer_from_files(optimizer, tensors, meta['optimizer'])
            scheduler.load_state_dict(meta['scheduler'])
            _rng_from_files(tensors, meta['rng'])
            start, initial_loss = int(meta['step']), meta['initial_loss']
            history = list(meta['loss_history'])
        else:
            self.output.mkdir(parents=True, exist_ok=True)
            (self.output / RUN_CONFIG).write_text(json.dumps(c.to_dict(), indent=2) + '\n')
            initial_loss = self._eval_loss(policy, samples, eval_indices)
            torch.manual_seed(c.seed)
            start, history = 0, []

        end = total if stop_after is None else min(total, start + stop_after)
        trainable = sum(p.numel() for p in params)
        total_params = sum(p.numel() for p in policy.model.parameters())
        last_checkpoint = checkpoint
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=f'train {c.policy}', unit='step',
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        try:
            for step in range(start, end):
                policy.model.train()
                chosen = batch_indices(step, c.batch_size, len(samples), c.seed)
                batch = collate(policy, [samples[i] for i in chosen])
                loss = policy.training_loss(batch)
                if not torch.isfinite(loss):
                    raise TrainingError(f'loss is {float(loss)} at step {step}; lower --lr?')
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)
                optimizer.step()
                scheduler.step()
                history.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f'{history[-1]:.4f}', lr=f'{scheduler.get_last_lr()[0]:.2e}')
                done = step + 1
                if done == end or (c.checkpoint_every and done % c.checkpoint_every == 0):
                    last_checkpoint = self._save_checkpoint(
                        done, policy, adapters, optimizer, scheduler,
                        {'initial_loss': initial_loss, 'loss_history': history,
                         'total_steps': total})
        finally:
            bar.close()
        policy.model.eval()

        summary = {
            'policy': c.policy, 'family': policy.family, 'mode': c.mode,
            'lora': None if c.lora is None else dict(c.lora.to_dict(),
                                                     targets=adapters.targets),
            'steps': total, 'start_step': start, 'steps_run': end - start,
            'complete': end == total, 'batch_size': c.batch_size, 'seed': c.seed,
            'initial_loss': initial_loss, 'final_loss': None,
            'first_step_loss': history[0] if history else None,
            'last_step_loss': history[-1] if history else None,
            'trainable_parameters': trainable, 'total_parameters': total_params,
            'trainable_percent': round(100.0 * trainable / total_params, 4),
            'num_samples': len(samples), 'counterfactual_samples': len(samples) - recorded,
            'relabelled_frames': relabelled,
            'statistics_key': c.unnorm_key,
            'checkpoint': None if last_checkpoint is None else str(last_checkpoint),
            'output': None, 'seconds': None, 'initialised_from': self.initialised,
        }
        if end == total:
            summary['final_loss'] = self._eval_loss(policy, samples, eval_indices)
            if adapters is not None:
                policy.model = adapters.merge_and_unload()
            policy.save_pretrained(self.output)
            # What it was trained to follow: the set instruction retrieval maps onto.
            write_instruction_set(self.output, (s['instruction'] for s in samples))
            summary['output'] = str(self.output)
        summary['seconds'] = round(time.monotonic() - started, 3)
        (self.output / SUMMARY).write_text(json.dumps(summary, indent=2) + '\n')
        return summary


def untrained_lora_problem(c: TrainConfig) -> str:
    """Why this run would train LoRA adapters on random base weights ('' if it does not)."""
    if c.lora is None or c.model_path or c.init_weights:
        return ''
    return (f'LoRA keeps the base weights frozen, but without --model-path (or '
            f'--init-weights) the {c.policy} {c.size!r} preset starts from random weights, '
            f'which would stay random')


def train(config: TrainConfig, dataset=None, resume: bool = False,
          stop_after: int | None = None, progress: bool = True) -> dict:
    """Run :class:`Trainer` once and return its summary (see the module docstring)."""
    return Trainer(config, dataset, progress).run(resume=resume, stop_after=stop_after)
