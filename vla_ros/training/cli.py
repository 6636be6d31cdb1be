"""``vla-ros train``: argument parsing and the command (hooked into ``vla_ros.cli``).

Usage::

    vla-ros train --policy NAME --data DIR --output DIR [--size tiny | --model-path CKPT]
                  [--set KEY=VALUE ...] [--init-weights CKPT]
                  [--steps N --batch-size B --lr LR --seed S] [--resume]
                  [--lora-rank R --lora-alpha A --lora-dropout P --lora-targets a,b | --full]
                  [--allow-untrained-base]
                  [--checkpoint-every K] [--unnorm-key KEY] [--counterfactual [RATE]]
                  [--keep-statistics] [--relabel-from-state] [--history-stride TICKS]

Prints the run's JSON summary on stdout; the progress bar goes to stderr.
"""

import argparse
import json
import re
import sys
from pathlib import Path


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be >= {minimum}, got {value}')
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not value > 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'must be a positive number, got {text}')
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f'must be in [0, 1), got {text}')
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f'must be in (0, 1], got {text}')
    return value


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(',') if n.strip())
    if not names:
        raise argparse.ArgumentTypeError('expected comma-separated names, e.g. q_proj,v_proj')
    return names


def _model_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition('=')
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{key.strip()}: VALUE must be JSON (true, 1.0, '
                                         f'"text"), got {value!r}') from None


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        'train', help='fine-tune a policy on episodes (LoRA or full)',
        description='Fine-tune a registered torch policy on an episode dataset. LoRA '
                    '(peft) is the default; --full trains every weight (usual when '
                    'training a preset from scratch). Checkpoints are safetensors + JSON.')
    p.add_argument('--policy', default='',
                   help='registered policy name (default: the family of --model-path)')
    p.add_argument('--data', required=True, help='directory of episode_*.npz files')
    p.add_argument('--output', required=True, help='run directory (final policy at its root)')
    p.add_argument('--size', default='tiny', help='preset to start from (default: tiny)')
    p.add_argument('--model-path', default='', help='checkpoint directory to fine-tune')
    p.add_argument('--set', dest='model_options', action='append', default=[],
                   type=_model_option, metavar='KEY=VALUE',
                   help='change one configuration field of the --size preset (VALUE is '
                        'JSON, e.g. --set target_readout=true); repeatable')
    p.add_argument('--init-weights', default='', metavar='CKPT',
                   help='start the --size preset from this checkpoint\'s tensors where names '
                        'and shapes match (to grow a trained model by new modules)')
    p.add_argument('--steps', type=_int_at_least(1), default=1000)
    p.add_argument('--batch-size', type=_int_at_least(1), default=8)
    p.add_argument('--lr', type=_positive_float, default=1e-4, help='peak learning rate')
    p.add_argument('--weight-decay', type=float, default=0.0)
    p.add_argument('--warmup-steps', type=_int_at_least(0), default=None,
                   help='linear warmup steps before the cosine decay (default: 5%% of steps)')
    p.add_argument('--max-grad-norm', type=_positive_float, default=1.0,
                   help='gradient clipping norm')
    p.add_argument('--seed', type=_int_at_least(0), default=0)
    p.add_argument('--resume', action='store_true',
                   help='continue from the latest checkpoint in --output (same settings)')
    p.add_argument('--full', action='store_true', help='full fine-tuning instead of LoRA')
    p.add_argument('--allow-untrained-base', action='store_true',
                   help='apply LoRA although no --model-path / --init-weights gives the '
                        'preset trained weights (refused otherwise: the frozen base would '
                        'stay random)')
    p.add_argument('--lora-rank', type=_int_at_least(1), default=None, help='default 8')
    p.add_argument('--lora-alpha', type=_positive_float, default=None,
                   help='default 2 x rank')
    p.add_argument('--lora-dropout', type=_fraction, default=None, help='default 0.05')
    p.add_argument('--lora-targets', type=_name_list, default=None,
                   help='comma-separated Linear layer names (default: q_proj,k_proj,v_proj,'
                        'o_proj,gate_proj,up_proj,down_proj when present)')
    p.add_argument('--checkpoint-every', type=_int_at_least(0), default=100,
                   help='steps between checkpoints (0: only at the end)')
    p.add_argument('--keep-checkpoints', type=_int_at_least(0), default=3,
                   help='how many checkpoints to keep (0: all)')
    p.add_argument('--unnorm-key', default='',
                   help='name of the dataset statistics in the checkpoint '
                        '(default: the --data directory name)')
    p.add_argument('--eval-samples', type=_int_at_least(1), default=32,
                   help='fixed samples whose loss is reported before and after training')
    p.add_argument('--relabel-from-state', action='store_true',
                   help='label the simulated reach and pick-up approach frames anew with '
                        'the current scripted expert, from each frame alone')
    p.add_argument('--done-label', action='store_true',
                   help="learn a stop: append each frame's done label as the terminate "
                        'dimension (data from `vla-ros collect`; the checkpoint must use '
                        'the extended space, see python -m vla_ros.training.done_label)')
    p.add_argument('--done-hold-steps', type=int, default=0,
                   help='with --done-label: label a frame done only once the task has stayed '
                        'achieved for this many frames before it (default 0)')
    p.add_argument('--keep-statistics', action='store_true',
                   help="keep the --model-path / --init-weights checkpoint's normalization "
                        'statistics instead of computing them from --data')
    p.add_argument('--counterfactual', type=_rate, nargs='?', const=1.0, default=0.0,
                   metavar='RATE',
                   help='add, for this fraction (default 1) of the simulated reach/pick_up '
                        'frames, the same images with another object named and the scripted '
                        'expert\'s action for it')
    p.add_argument('--history-stride', type=_int_at_least(0), default=0, metavar='TICKS',
                   help='policies with a history window (Octo, RT-1): control ticks between '
                        'its frames, i.e. between two inferences at run time (default 0: '
                        "vla-ros eval's schedule, min(5, chunk length))")
    p.add_argument('--device', default='cpu')
    p.add_argument('--stop-after', type=_int_at_least(1), default=None,
                   help='run at most this many steps now, checkpoint, and exit '
                        '(continue later with --resume)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=cmd_train)
    return p


def _policy_from_checkpoint(model_path: str) -> str:
    path = Path(model_path).expanduser() / 'config.json'
    try:
        family = json.loads(path.read_text()).get('family', '')
    except (OSError, ValueError) as exc:
        raise ValueError(f'--policy not given and {path} is unreadable: {exc}') from None
    if not family:
        raise ValueError(f'--policy not given and {path} names no family')
    return family


def config_from_args(args):
    """Build a validated TrainConfig from parsed arguments (ValueError on conflicts)."""
    from vla_ros.training.lora import LoraSettings
    from vla_ros.training.trainer import TrainConfig

    lora_given = [f'--lora-{n}' for n in ('rank', 'alpha', 'dropout', 'targets')
                  if getattr(args, f'lora_{n}') is not None]
    if args.full and lora_given:
        raise ValueError(f'--full and {", ".join(lora_given)} are exclusive')
    if args.model_path and args.size != 'tiny':
        raise ValueError('--size and --model-path are exclusive (a checkpoint has its size)')
    if args.full and args.allow_untrained_base:
        raise ValueError('--allow-untrained-base applies to LoRA, not --full')
    lora = None
    if not args.full:
        defaults = LoraSettings()
        lora = LoraSettings(
            rank=args.lora_rank if args.lora_rank is not None else defaults.rank,
            alpha=args.lora_alpha,
            dropout=args.lora_dropout if args.lora_dropout is not None else defaults.dropout,
            targets=args.lora_targets or ())
    policy = args.policy or (_policy_from_checkpoint(args.model_path) if args.model_path
                             else '')
    if not policy:
        raise ValueError('--policy is required (or --model-path of a checkpoint)')
    unnorm_key = args.unnorm_key or re.sub(r'[^A-Za-z0-9_.-]+', '_',
                                           Path(args.data).resolve().name) or 'default'
    config = TrainConfig(policy=policy, output=args.output, data=args.data, size=args.size,
                         model_path=args.model_path, init_weights=args.init_weights,
                         model_options=dict(args.model_options),
                         steps=args.steps,
                         batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm,
                         seed=args.seed, lora=lora, checkpoint_every=args.checkpoint_every,
                         keep_checkpoints=args.keep_checkpoints, unnorm_key=unnorm_key,
                         device=args.device, eval_samples=args.eval_samples,
                         counterfactual=args.counterfactual,
                         keep_statistics=args.keep_statistics,
                         relabel_from_state=args.relabel_from_state,
                         done_label=args.done_label, done_hold_steps=args.done_hold_steps,
                         history_stride=args.history_stride,
                         allow_untrained_base=args.allow_untrained_base)
    return config


def cmd_train(args) -> int:
    """Run ``vla-ros train``; 0 when the run completed, 2 on bad arguments or data."""
    from vla_ros.policies.contract import PolicyLoadError
    from vla_ros.training.trainer import TrainingError, train

    try:
        config = config_from_args(args)
        summary = train(config, resume=args.resume, stop_after=args.stop_after,
                        progress=not args.no_progress)
    except (ValueError, FileNotFoundError, PolicyLoadError, TrainingError) as exc:
        print(f'vla-ros train: {exc}', file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def main(argv=None) -> int:
    """Stand-alone entry (``python -m vla_ros.training.cli``), same as ``vla-ros train``."""
    parser = argparse.ArgumentParser(prog='vla-ros')
    add_train_parser(parser.add_subparsers(dest='command', required=True))
    args = parser.parse_args(['train', *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
