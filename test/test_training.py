"""`vla-ros train`: batches, schedule, LoRA and full fine-tuning, checkpoints, resumption."""

import argparse
import json

import numpy as np
import pytest
import tiny_mlp_policy  # noqa: F401 - registers the test policy
from safetensors.torch import load_file
from tiny_mlp_policy import LINEAR_LAYERS, NAME

from vla_ros.actions.spaces import load_action_space
from vla_ros.datasets.episodes import Episode, EpisodeDataset
from vla_ros.images import prepare_image
from vla_ros.policies.contract import Observation
from vla_ros.policies.registry import available_policies, make_policy
from vla_ros.training import cli
from vla_ros.training.data import (
    batch_indices,
    bounded_statistics,
    collate,
    install_statistics,
)
from vla_ros.training.lora import LoraSettings, resolve_targets
from vla_ros.training.trainer import (
    CHECKPOINTS,
    TrainConfig,
    TrainingError,
    latest_checkpoint,
    lr_factor,
    train,
)

# Every registered policy with a model ('scripted' has none; it is rejected in the CLI test).
# pi0 / pi05 load LeRobot checkpoints only (there is no untrained preset to train).
TRAINABLE = [n for n in available_policies() if n not in ('scripted', 'pi0', 'pi05')]
# Each instruction has its own action (plus small noise): learnable from the words alone.
TASKS = {
    'move left': [0.0, 0.03, 0.0, 0.0, 0.0, 0.1, 1.0],
    'move right': [0.0, -0.03, 0.0, 0.0, 0.0, -0.1, 1.0],
    'lift the cube up': [0.0, 0.0, 0.04, 0.1, 0.0, 0.0, 0.0],
    'push forward': [0.04, 0.0, -0.01, 0.0, 0.1, 0.0, 0.0],
}


def make_dataset(action_space='arm7', steps=10, seed=0, size=(48, 40), proprio=False):
    space = load_action_space(action_space)
    rng = np.random.default_rng(seed)
    episodes = []
    for instruction, action in TASKS.items():
        actions = np.resize(np.array(action), space.dim)[None] + rng.normal(
            0, 0.002, (steps, space.dim))
        actions[:, 6] = action[6]  # the gripper is exactly open or closed
        actions = np.clip(actions, space.low, space.high)
        images = rng.integers(0, 256, (steps, size[1], size[0], 3), dtype=np.uint8)
        state = rng.normal(0, 0.1, (steps, space.dim)).astype(np.float32) if proprio else None
        episodes.append(Episode(instruction, action_space, 0.1, {'front': images},
                                actions, np.arange(steps) * 0.1, proprio=state))
    return EpisodeDataset(episodes)


@pytest.fixture(scope='module')
def dataset():
    return make_dataset()  # 48x40 images: not the policy's size, so collate must resize


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory, dataset):
    return dataset.save(tmp_path_factory.mktemp('episodes'))


def config(output, **kw):
    kw = {'policy': NAME, 'output': str(output), 'steps': 60, 'batch_size': 8, 'lr': 1e-2,
          'lora': None, 'checkpoint_every': 20, 'seed': 1, **kw}
    return TrainConfig(**kw)


def weights(path):
    return load_file(str(path / 'model.safetensors'))


# --- data -------------------------------------------------------------------------------


def test_collate_follows_the_batch_convention(dataset):
    policy = make_policy(NAME)
    install_statistics(policy, dataset.statistics('sim'), 'sim')
    samples = list(dataset.samples(policy.spec.chunk_length))
    batch = collate(policy, [samples[0], samples[9]])  # 9 = last step of episode 0
    w, h = policy.spec.image_size
    assert batch['images'].shape == (2, 1, 3, h, w)
    assert batch['actions'].shape == (2, 4, 7) and batch['actions'].dtype.is_floating_point
    assert batch['valid'].tolist() == [[True] * 4, [True, False, False, False]]
    assert batch['instructions'] == ['move left', 'move left'] and batch['proprio'] is None
    # images exactly as inference preprocesses them, actions normalized into [-1, 1]
    frame = prepare_image(samples[9]['images']['front'], (w, h))
    expected = policy.images_tensor(Observation({'front': frame}, 'x'))[0]
    assert (batch['images'][1] == expected).all()
    assert batch['actions'].abs().max() <= 1.0
    np.testing.assert_allclose(batch['actions'][0].numpy(),
                               policy.normalizer.normalize(samples[0]['actions']), atol=1e-6)
    assert policy.statistics.select('sim').num_transitions == 40
    policy.collate = lambda samples: {'own': len(samples)}  # a family's own collate wins
    assert collate(policy, samples[:3]) == {'own': 3}


def test_statistics_are_clipped_into_the_action_space(capsys):
    data = make_dataset()
    data.episodes[0].actions[:, 0] = 0.2  # x beyond the arm7 bound 0.05
    raw = data.statistics('k').select('k').action
    stats = bounded_statistics(data.statistics('k'), load_action_space('arm7')).select('k')
    assert raw.q99[0] == pytest.approx(0.2) and stats.action.q99[0] == 0.05
    np.testing.assert_array_equal(stats.action.q01, raw.q01)
    np.testing.assert_array_equal(stats.action.mean, raw.mean)
    assert stats.num_transitions == 40
    assert "exceed the 'arm7' bounds in ['x']" in capsys.readouterr().err


def test_batch_indices_are_seeded_epoch_permutations():
    first = np.concatenate([batch_indices(s, 5, 20, seed=3) for s in range(4)])
    assert sorted(first.tolist()) == list(range(20))  # one epoch visits every sample once
    again = np.concatenate([batch_indices(s, 5, 20, seed=3) for s in range(4)])
    np.testing.assert_array_equal(first, again)
    second = np.concatenate([batch_indices(s, 5, 20, seed=3) for s in range(4, 8)])
    assert not np.array_equal(first, second) and sorted(second.tolist()) == list(range(20))
    assert not np.array_equal(batch_indices(0, 5, 20, seed=4), batch_indices(0, 5, 20, seed=3))
    assert len(batch_indices(3, 7, 10, seed=0)) == 7  # straddles an epoch boundary


def test_learning_rate_warmup_then_cosine():
    factors = [lr_factor(s, 10, 100) for s in range(100)]
    np.testing.assert_allclose(factors[:10], np.arange(1, 11) / 10)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert factors[10] == 1.0 and 0 < factors[-1] < 0.01
    assert lr_factor(0, 0, 5) == 1.0


# --- training ---------------------------------------------------------------------------


def test_full_training_lowers_loss_and_checkpoint_loads(tmp_path, dataset):
    summary = train(config(tmp_path / 'run'), dataset=dataset, progress=False)
    assert summary['complete'] and summary['mode'] == 'full' and summary['steps'] == 60
    assert summary['final_loss'] < 0.5 * summary['initial_loss'], summary
    assert summary['trainable_parameters'] == summary['total_parameters'] > 0
    assert summary['trainable_percent'] == 100.0
    run = tmp_path / 'run'
    assert json.loads((run / 'training_summary.json').read_text()) == summary
    # the instructions it was trained on travel with it (for instruction retrieval)
    assert json.loads((run / 'instructions.json').read_text()) == sorted(
        {s['instruction'] for s in dataset.samples(1)})
    assert not [p for p in run.rglob('*') if p.suffix in ('.pt', '.pth', '.bin', '.pkl')]
    # keep_checkpoints=3 of steps 20, 40, 60
    assert [p.name for p in sorted((run / CHECKPOINTS).iterdir())] == [
        'step_00000020', 'step_00000040', 'step_00000060']
    policy = make_policy(NAME, model_path=str(run))
    chunk = policy.predict_chunk(Observation.make_example(policy.spec, 'move left'))
    assert chunk.shape == (4, 7) and chunk.dtype == np.float32
    assert (chunk >= policy.action_space.low - 1e-6).all()
    assert (chunk <= policy.action_space.high + 1e-6).all()
    # the dataset statistics travel with the checkpoint, and the model learnt the task
    assert list(policy.statistics) == ['default']
    right = policy.predict_chunk(Observation.make_example(policy.spec, 'move right'))
    assert chunk[:, 1].mean() > 0.015 and right[:, 1].mean() < -0.015  # y: +0.03 / -0.03
    final = latest_checkpoint(run) / 'policy'
    for key, value in weights(final).items():
        assert (weights(run)[key] == value).all()


def test_init_weights_starts_from_a_checkpoint_and_reports_fresh_tensors(tmp_path, dataset):
    first = train(config(tmp_path / 'first'), dataset=dataset, progress=False)
    again = train(config(tmp_path / 'again', init_weights=str(tmp_path / 'first'), steps=20,
                         checkpoint_every=0), dataset=dataset, progress=False)
    assert again['initialised_from']['fresh'] == [] and again['initialised_from']['loaded'] > 0
    # It starts where the first run ended, not from scratch.
    assert again['initial_loss'] < 0.5 * first['initial_loss'], (first, again)
    with pytest.raises(ValueError, match='exclusive'):
        config(tmp_path / 'x', init_weights=str(tmp_path / 'first'), model_path='y')


def test_keep_statistics_keeps_the_source_checkpoints_bins(tmp_path, dataset):
    import dataclasses as dc

    from vla_ros.actions.normalization import load_statistics

    first = tmp_path / 'first'
    train(config(first, steps=2, checkpoint_every=0), dataset=dataset, progress=False)
    source = load_statistics(first / 'dataset_statistics.json')
    # Different data: actions scaled down, so recomputed statistics would differ.
    shrunk = EpisodeDataset([dc.replace(e, actions=e.actions * 0.5)
                             for e in dataset.episodes])
    kept, recomputed = tmp_path / 'kept', tmp_path / 'recomputed'
    train(config(kept, steps=2, checkpoint_every=0, init_weights=str(first),
                 keep_statistics=True), dataset=shrunk, progress=False)
    train(config(recomputed, steps=2, checkpoint_every=0, init_weights=str(first)),
          dataset=shrunk, progress=False)
    key = next(iter(source))
    same = load_statistics(kept / 'dataset_statistics.json').select(key).action
    other = load_statistics(recomputed / 'dataset_statistics.json').select(key).action
    np.testing.assert_array_equal(same.q01, source.select(key).action.q01)
    np.testing.assert_array_equal(same.q99, source.select(key).action.q99)
    assert not np.allclose(other.q99, same.q99)
    with pytest.raises(ValueError, match='keep_statistics needs'):
        config(tmp_path / 'x', keep_statistics=True)
    with pytest.raises(TrainingError, match='has no entry'):
        train(config(tmp_path / 'y', steps=2, init_weights=str(first), keep_statistics=True,
                     unnorm_key='elsewhere'), dataset=shrunk, progress=False)


def test_relabel_from_state_counts_what_it_relabelled(tmp_path, dataset):
    summary = train(config(tmp_path / 'r', steps=2, checkpoint_every=0,
                           relabel_from_state=True), dataset=dataset, progress=False)
    assert summary['relabelled_frames'] == 0  # no simulated reach / pick-up episodes here
    plain = train(config(tmp_path / 'p', steps=2, checkpoint_every=0), dataset=dataset,
                  progress=False)
    assert plain['relabelled_frames'] is None
    with pytest.raises(ValueError, match='relabel_from_state must be true or false'):
        config(tmp_path / 'x', relabel_from_state=1)


def test_set_changes_preset_fields_and_is_kept_for_resume(tmp_path, data_dir, capsys):
    argv = ['--policy', 'openvla_sim', '--data', str(data_dir), '--output',
            str(tmp_path / 'o'), '--steps', '4', '--batch-size', '2', '--full', '--no-progress',
            '--checkpoint-every', '2', '--set', 'target_readout=true',
            '--set', 'target_readout_heads=2', '--stop-after', '2']
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    config = json.loads((tmp_path / 'o' / 'checkpoints' / 'step_00000002' / 'policy'
                         / 'config.json').read_text())
    assert config['target_readout'] is True and config['target_readout_heads'] == 2
    code, _, err = run_cli(argv[:-6] + ['--resume'], capsys)
    assert code == 2 and "model_options: {'target_readout': True" in err, err
    code, _, err = run_cli(argv[:-2] + ['--resume'], capsys)
    assert code == 0, err


def test_init_weights_grows_an_openvla_model_by_a_module(tmp_path):
    import torch

    from vla_ros.training.trainer import initialise_matching

    make_policy('openvla', seed=0).save_pretrained(tmp_path / 'small')
    source = make_policy('openvla', model_path=str(tmp_path / 'small')).model.state_dict()
    grown = make_policy('openvla_sim', target_readout=True, seed=1)
    info = initialise_matching(grown, tmp_path / 'small')
    assert info['fresh'] and all(n.startswith('target_readout.') for n in info['fresh'])
    assert info['ignored'] == []
    state = grown.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in source.items())


def test_lora_training_lowers_loss_and_saves_merged_weights(tmp_path, dataset):
    lora = LoraSettings(rank=4, dropout=0.0, targets=LINEAR_LAYERS)
    summary = train(config(tmp_path / 'run', lora=lora), dataset=dataset, progress=False)
    assert summary['mode'] == 'lora' and summary['lora']['targets'] == list(LINEAR_LAYERS)
    assert summary['final_loss'] < 0.5 * summary['initial_loss'], summary
    assert 0 < summary['trainable_parameters'] < summary['total_parameters']
    assert 0 < summary['trainable_percent'] < 100
    base = make_policy(NAME, seed=1)  # the base the adapters were trained on
    out = weights(tmp_path / 'run')
    assert set(out) == set(base.model.state_dict())  # merged: no lora_ / base_layer keys
    assert (out['text.weight'] == base.model.state_dict()['text.weight']).all()  # frozen
    assert not (out['head.weight'] == base.model.state_dict()['head.weight']).all()
    for path in (tmp_path / 'run', latest_checkpoint(tmp_path / 'run') / 'policy'):
        policy = make_policy(NAME, model_path=str(path))
        assert policy.predict_chunk(Observation.make_example(policy.spec)).shape == (4, 7)


@pytest.mark.parametrize('name', TRAINABLE)
def test_every_family_trains_and_its_checkpoint_reloads(tmp_path, name):
    # A few steps through the real loop (the family's own collate if it has one); the
    # families' own tests check that their loss falls.
    spec = make_policy(name).spec
    data = make_dataset(spec.action_space.name, steps=3, size=(80, 60),
                        proprio=spec.uses_proprio)
    summary = train(config(tmp_path, policy=name, steps=2, batch_size=2, eval_samples=2,
                           lr=1e-4, checkpoint_every=1), dataset=data, progress=False)
    assert summary['complete'] and np.isfinite(summary['final_loss'])
    policy = make_policy(name, model_path=str(tmp_path))
    chunk = policy.predict_chunk(Observation.make_example(policy.spec))
    assert chunk.shape == policy.spec.chunk_shape
    entry = policy.statistics.select(None)
    assert entry.num_transitions == 12  # the dataset's statistics, not the bounds default
    assert np.allclose(entry.action.q99, data.statistics().select(None).action.q99)


@pytest.mark.parametrize('lora', [None, LoraSettings(rank=2, dropout=0.1,
                                                      targets=('fuse', 'head'))],
                         ids=['full', 'lora'])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, dataset, lora):
    kw = {'steps': 25, 'checkpoint_every': 10, 'lora': lora}
    whole = train(config(tmp_path / 'whole', **kw), dataset=dataset, progress=False)
    part = train(config(tmp_path / 'part', **kw), dataset=dataset, progress=False,
                 stop_after=13)
    assert not part['complete'] and part['steps_run'] == 13 and part['output'] is None
    assert latest_checkpoint(tmp_path / 'part').name == 'step_00000013'
    resumed = train(config(tmp_path / 'part', **kw), dataset=dataset, progress=False,
                    resume=True)
    assert resumed['start_step'] == 13 and resumed['steps_run'] == 12 and resumed['complete']
    a, b = weights(tmp_path / 'whole'), weights(tmp_path / 'part')
    assert set(a) == set(b)
    for key in a:
        assert (a[key] == b[key]).all(), key
    assert resumed['initial_loss'] == whole['initial_loss']
    assert resumed['final_loss'] == whole['final_loss']


def test_resume_refuses_changed_settings_and_missing_checkpoints(tmp_path, dataset):
    with pytest.raises(TrainingError, match='no checkpoint'):
        train(config(tmp_path / 'none'), dataset=dataset, resume=True, progress=False)
    train(config(tmp_path / 'run', steps=4), dataset=dataset, progress=False, stop_after=2)
    with pytest.raises(TrainingError, match=r'lr: 0.01 -> 0.02'):
        train(config(tmp_path / 'run', steps=4, lr=2e-2), dataset=dataset, resume=True,
              progress=False)
    with pytest.raises(TrainingError, match='already holds a training run'):
        train(config(tmp_path / 'run', steps=4), dataset=dataset, progress=False)
    # a run that died before its first checkpoint (only train_config.json) may restart
    (tmp_path / 'died').mkdir()
    (tmp_path / 'died' / 'train_config.json').write_text('{}')
    assert train(config(tmp_path / 'died', steps=2), dataset=dataset,
                 progress=False)['complete']


def test_lora_target_resolution():
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.v_proj = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
            self.mixer = torch.nn.Linear(4, 4)

    model = torch.nn.Sequential(Block(), Block())
    assert resolve_targets(model) == ['q_proj', 'v_proj']
    assert resolve_targets(model, ('mixer',)) == ['mixer']
    with pytest.raises(ValueError, match=r'\[.nope.\] match no Linear layer.*mixer \(x2\)'):
        resolve_targets(model, ('nope',))
    mlp = make_policy(NAME).model
    with pytest.raises(ValueError, match='pass --lora-targets.*fuse, head, image_proj'):
        resolve_targets(mlp)
    with pytest.raises(ValueError, match='no nn.Linear'):
        resolve_targets(torch.nn.Sequential(torch.nn.ReLU()))
    for bad in ({'rank': 0}, {'dropout': 1.0}, {'alpha': -1}):
        with pytest.raises(ValueError):
            LoraSettings(**bad)


# --- command line -----------------------------------------------------------------------


def run_cli(argv, capsys):
    parser = argparse.ArgumentParser(prog='vla-ros')
    cli.add_train_parser(parser.add_subparsers(dest='command', required=True))
    try:
        args = parser.parse_args(['train', *argv])
        code = args.func(args)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_trains_and_prints_a_json_summary(tmp_path, data_dir, capsys):
    code, out, err = run_cli(['--policy', NAME, '--data', str(data_dir), '--output',
                              str(tmp_path / 'o'), '--steps', '3', '--batch-size', '4',
                              '--full', '--no-progress', '--seed', '2'], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary['steps'] == 3 and summary['output'] == str(tmp_path / 'o')
    assert summary['statistics_key'] == data_dir.name  # default unnorm key: the data dir
    for key in ('initial_loss', 'final_loss', 'trainable_parameters', 'total_parameters',
                'trainable_percent', 'seconds'):
        assert summary[key] is not None
    policy = make_policy(NAME, model_path=str(tmp_path / 'o'), unnorm_key=data_dir.name)
    assert policy.predict_chunk(Observation.make_example(policy.spec)).shape == (4, 7)
    # --policy may be omitted when fine-tuning a checkpoint: its family is used
    code, out, err = run_cli(['--model-path', str(tmp_path / 'o'), '--data', str(data_dir),
                              '--output', str(tmp_path / 'ft'), '--steps', '2', '--full',
                              '--no-progress'], capsys)
    assert code == 0, err
    assert json.loads(out)['policy'] == NAME


@pytest.mark.parametrize('extra, message', [
    (['--full', '--lora-rank', '4'], '--full and --lora-rank are exclusive'),
    (['--steps', '0'], 'argument --steps: must be >= 1, got 0'),
    (['--lr', 'fast'], "argument --lr: expected a number, got 'fast'"),
    (['--lora-dropout', '1.5'], 'argument --lora-dropout: must be in [0, 1)'),
    (['--warmup-steps', '9'], r'warmup_steps (9) must be < steps (5)'),
    (['--policy', 'nope'], "unknown policy 'nope'; available:"),
    (['--policy', 'scripted'], "policy 'scripted' has no trainable model"),
    (['--allow-untrained-base'],
     'pass --lora-targets with some of its Linear layers: fuse, head, image_proj'),
    (['--lora-targets', 'q_proj', '--allow-untrained-base'],
     "LoRA targets ['q_proj'] match no Linear layer"),
    ([], 'without --model-path (or --init-weights) the test_tiny_mlp'),
    (['--full', '--allow-untrained-base'], '--allow-untrained-base applies to LoRA'),
    (['--resume'], '--resume: no checkpoint in'),
    (['--size', 'huge'], "unknown size 'huge'"),
    (['--init-weights', 'a', '--model-path', 'b'], 'init_weights and model_path are exclusive'),
    (['--set', 'target_readout'], "expected KEY=VALUE, got 'target_readout'"),
    (['--set', 'lr=fast'], 'lr: VALUE must be JSON'),
    (['--set', 'hidden=1', '--model-path', 'b'], 'model options and model_path are exclusive'),
    (['--full', '--counterfactual'], 'counterfactual relabelling needs simulated'),
    (['--counterfactual', '1.5'], 'argument --counterfactual: must be in (0, 1], got 1.5'),
])
def test_cli_errors_are_clear(tmp_path, data_dir, capsys, extra, message):
    argv = ['--policy', NAME, '--data', str(data_dir), '--output', str(tmp_path / 'o'),
            '--steps', '5', '--no-progress']
    code, out, err = run_cli(argv + extra, capsys)
    assert code == 2 and out == ''
    assert message in err, err


def test_lora_on_a_random_preset_is_refused_unless_asked_for(tmp_path, data_dir, capsys):
    # The README's own example once LoRA-tuned a randomly initialised OpenVLA in silence.
    argv = ['--policy', 'openvla', '--data', str(data_dir), '--output', str(tmp_path / 'o'),
            '--steps', '1', '--batch-size', '2', '--no-progress', '--eval-samples', '2']
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ''
    for part in ('random weights', '--full', '--model-path', '--allow-untrained-base'):
        assert part in err, err
    code, out, err = run_cli(argv + ['--allow-untrained-base'], capsys)
    assert code == 0, err
    assert 'WARNING' in err and 'random weights' in err, err
    # adapting a trained checkpoint is the normal case: no warning
    code, out, err = run_cli(['--model-path', str(tmp_path / 'o'), '--data', str(data_dir),
                              '--output', str(tmp_path / 'ft'), '--steps', '1',
                              '--batch-size', '2', '--no-progress', '--eval-samples', '2'],
                             capsys)
    assert code == 0 and 'WARNING' not in err, err


def test_written_weights_are_readable_as_the_umask_allows(tmp_path, data_dir, capsys):
    # safetensors writes through a 0600 temporary file; a checkpoint must be shareable.
    import os
    import stat

    old = os.umask(0o022)
    try:
        code, _, err = run_cli(['--policy', 'openvla', '--data', str(data_dir), '--output',
                                str(tmp_path / 'o'), '--steps', '2', '--batch-size', '2',
                                '--full', '--no-progress', '--eval-samples', '2',
                                '--checkpoint-every', '1'], capsys)
        assert code == 0, err
        code, _, err = run_cli(['--policy', NAME, '--data', str(data_dir), '--output',
                                str(tmp_path / 'mlp'), '--steps', '1', '--full',
                                '--no-progress'], capsys)
        assert code == 0, err
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob('*') if p.is_file()]
    assert any(p.name == 'model.safetensors' for p in files)
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
             for p in files}
    assert set(modes.values()) == {'0o644'}, modes


def test_cli_rejects_bad_data(tmp_path, capsys):
    argv = ['--policy', NAME, '--output', str(tmp_path / 'o'), '--full', '--no-progress']
    code, _, err = run_cli(argv + ['--data', str(tmp_path / 'missing')], capsys)
    assert code == 2 and 'does not exist' in err
    other = make_dataset('mobile_manipulator', steps=3).save(tmp_path / 'mm')
    code, _, err = run_cli(argv + ['--data', str(other)], capsys)
    assert code == 2 and "action space 'mobile_manipulator' differs" in err


def test_train_reads_recorded_bags_directly():
    # A rosbag2 recording of the simulated robot (the golden bag) is training data as is.
    from pathlib import Path

    from vla_ros.training.data import load_dataset

    dataset = load_dataset(Path(__file__).parent / 'golden' / 'sim_arm')
    assert len(dataset) >= 1 and dataset.action_space == 'arm7'
    episode = dataset.episodes[0]
    assert episode.instruction and len(episode) > 10
    assert 'front' in episode.images and episode.images['front'].dtype.name == 'uint8'


# --- history windows: trained as they run --------------------------------------------------


def _capture_windows(policy, family):
    """Record the window each prediction or loss feeds the model (the families' own path)."""
    windows = []
    model = policy.model
    if family == 'octo':
        original = model.condition

        def condition(images, text, valid, proprio=None):
            windows.append((images.detach().clone(), valid.detach().clone(),
                            None if proprio is None else proprio.detach().clone()))
            return original(images, text, valid, proprio)

        model.condition = condition
    else:  # rt1: the per-frame token history the transformer decodes
        original = model.decode

        def decode(history):
            windows.append((history.detach().clone(),))
            return original(history)

        model.decode = decode
    return windows


@pytest.mark.parametrize('family, options', [
    ('octo', {'uses_proprio': True, 'proprio_dim': 8, 'history_window': 3}),
    ('rt1', {'action_space': 'arm7'}),
])
@pytest.mark.parametrize('stride', [1, 3])
def test_training_history_window_is_the_one_inference_builds(family, options, stride):
    """A training sample's window equals what the policy gets at run time at that step."""
    import torch

    from vla_ros.training.data import history_sampling

    policy = make_policy(family, seed=0, **options)
    spec = policy.spec
    assert policy.history_window > 1
    steps, instruction = stride * (policy.history_window + 1), 'pick up the red cube'
    rng = np.random.default_rng(stride)
    raw = {c: rng.integers(0, 256, (steps, 40, 48, 3), dtype=np.uint8) for c in spec.camera_names}
    proprio = rng.uniform(-1, 1, (steps, 8)).astype(np.float32)
    space = spec.action_space
    actions = np.tile((space.low + space.high) / 2, (steps, 1))
    episode = Episode(instruction, space.name, spec.control_period, raw, actions,
                      np.arange(steps) * spec.control_period, proprio=proprio)
    samples = list(EpisodeDataset([episode]).samples(
        spec.chunk_length, **history_sampling(policy, stride)))
    windows = _capture_windows(policy, family)
    # Run time: the robot infers every `stride` ticks; the policy keeps its own history.
    policy.reset()
    runtime = {}
    for t in range(0, steps, stride):
        images = {c: prepare_image(raw[c][t], spec.image_size) for c in spec.camera_names}
        policy.predict_chunk(Observation(images, instruction, t * spec.control_period,
                                         proprio[t] if spec.uses_proprio else None))
        runtime[t] = windows.pop()
    assert len(runtime) > policy.history_window  # past the padded episode start
    for t, expected in runtime.items():
        policy.training_loss(collate(policy, [samples[t]]))
        trained = windows.pop()
        for got, want in zip(trained, expected, strict=True):
            if want is None:
                assert got is None
            elif want.dtype == torch.bool:
                assert torch.equal(got, want), (t, got, want)
            else:
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        if t >= stride:  # real history matters: the padded window is a different input
            policy.training_loss(collate(policy, [dict(samples[t], history=[])]))
            padded = windows.pop()
            assert not torch.allclose(padded[0], expected[0], atol=1e-4)


def test_samples_carry_the_episodes_earlier_frames():
    dataset = make_dataset(steps=7)
    plain = next(dataset.samples(4))
    assert 'history' not in plain
    samples = list(dataset.samples(4, history=2, stride=3))[:7]
    frames = dataset.episodes[0].images['front']
    assert [len(s['history']) for s in samples] == [0, 0, 0, 1, 1, 1, 2]
    np.testing.assert_array_equal(samples[6]['history'][0]['images']['front'], frames[0])
    np.testing.assert_array_equal(samples[6]['history'][1]['images']['front'], frames[3])
    with pytest.raises(ValueError, match='stride'):
        next(dataset.samples(4, history=1, stride=0))
    with pytest.raises(ValueError, match='history'):
        next(dataset.samples(4, history=-1))
