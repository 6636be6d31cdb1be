"""One contract test over every registered policy: the scripted one and every model family.

The parametrization is read from the registry at collection time, so a family that adds
its line to ``_BUILTINS`` is covered without touching this file. The test-only tiny MLP
(test/tiny_mlp_policy.py) keeps the torch path covered whatever families are installed.
"""

import subprocess
import sys

import numpy as np
import pytest
import tiny_mlp_policy  # noqa: F401 - registers the test-only torch policy
from tiny_mlp_policy import NAME as TINY_MLP

from vla_ros.policies.contract import InvalidObservationError, Observation
from vla_ros.policies.listing import policy_row, policy_table
from vla_ros.policies.registry import available_policies, make_policy

REGISTERED = available_policies()
# The LeRobot pi0 / pi05 policies load only a checkpoint directory (model_path and a
# tokenizer): there is no preset to build here. Their contract (shape, dtype, determinism,
# strict loading) is tested on LeRobot-layout fixtures in test_policy_pi0_lerobot.py.
CHECKPOINT_ONLY = frozenset({'pi0', 'pi05'})
ALL_POLICIES = [n for n in REGISTERED if n not in CHECKPOINT_ONLY]
# 'scripted' has no weights and no checkpoint format: its chunks are a pure function of
# its constructor arguments, so there is nothing to save and reload. It is exempt from the
# save/load test here, explicitly, rather than skipped at run time.
NO_CHECKPOINT = frozenset({'scripted'})
CHECKPOINTED = [n for n in ALL_POLICIES if n not in NO_CHECKPOINT]
SEED = 7




@pytest.fixture(scope='module')
def built():
    """Default (tiny) instance per policy name, built once per module with SEED."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = make_policy(name, seed=SEED)
        return cache[name]

    yield get
    for policy in cache.values():
        policy.close()


def first_chunk(policy, observation):
    """The chunk a freshly reset policy predicts (history-keeping families forget)."""
    policy.reset()
    return policy.predict_chunk(observation)


def example(policy, stamp=1.25):
    return Observation.make_example(policy.spec, 'put the red cube in the bowl', stamp=stamp,
                                    seed=3)


def test_registry_lists_the_builtins_and_the_test_policy():
    assert {'scripted', TINY_MLP} <= set(ALL_POLICIES)
    assert NO_CHECKPOINT <= set(ALL_POLICIES)  # the exemption names a real policy


@pytest.mark.parametrize('name', ALL_POLICIES)
def test_chunk_shape_dtype_and_bounds(built, name):
    policy = built(name)
    spec = policy.spec
    chunk = first_chunk(policy, example(policy))
    assert chunk.shape == (spec.chunk_length, spec.action_space.dim) == spec.chunk_shape
    assert chunk.dtype == np.float32 and np.isfinite(chunk).all()
    low, high = spec.action_space.low, spec.action_space.high
    assert (chunk >= low - 1e-6).all() and (chunk <= high + 1e-6).all(), chunk


@pytest.mark.parametrize('name', ALL_POLICIES)
def test_same_seed_and_observation_give_the_same_chunk(built, name):
    a = built(name)
    b = make_policy(name, seed=SEED)  # a second, independently built instance
    try:
        obs = example(a)
        first = first_chunk(a, obs)
        np.testing.assert_array_equal(first, first_chunk(b, obs))
        np.testing.assert_array_equal(first, first_chunk(a, obs))  # and again after reset
    finally:
        b.close()


@pytest.mark.parametrize('name', CHECKPOINTED)
def test_save_and_reload_give_identical_outputs(built, name, tmp_path):
    policy = built(name)
    policy.save_pretrained(tmp_path)
    loaded = make_policy(name, model_path=str(tmp_path), seed=SEED)
    try:
        assert loaded.spec == policy.spec
        for stamp in (0.0, 2.5):
            obs = example(policy, stamp)
            np.testing.assert_array_equal(first_chunk(policy, obs), first_chunk(loaded, obs))
    finally:
        loaded.close()


def _wrong_image_shape(obs, spec):
    camera = spec.camera_names[0]
    h, w, _ = obs.images[camera].shape
    obs.images[camera] = np.zeros((h + 8, w, 3), np.uint8)


def _empty_instruction(obs, spec):
    obs.instruction = ''


def _missing_camera(obs, spec):
    del obs.images[spec.camera_names[0]]


@pytest.mark.parametrize('name', ALL_POLICIES)
@pytest.mark.parametrize('mutate, match', [
    (_wrong_image_shape, 'shape'),
    (_empty_instruction, 'instruction is empty'),
    (_missing_camera, 'missing camera'),
], ids=['wrong_image_shape', 'empty_instruction', 'missing_camera'])
def test_bad_input_is_rejected(built, name, mutate, match):
    policy = built(name)
    obs = example(policy)
    mutate(obs, policy.spec)
    with pytest.raises(InvalidObservationError, match=match):
        policy.predict_chunk(obs)


@pytest.mark.parametrize('name', ALL_POLICIES)
def test_optional_members_are_declared_with_their_documented_defaults(built, name):
    policy = built(name)
    # Every registered policy looks at its images; only the sim expert (not registered)
    # declares needs_images False.
    assert policy.needs_images is True
    assert isinstance(policy.action_head, str) and isinstance(policy.action_type, str)
    assert policy.retriever is None  # no instruction_set given
    window = policy.history_window
    assert isinstance(window, int) and window >= 1
    if name == 'octo':
        assert window == policy.config.history_window > 1
    elif name == 'rt1':
        assert window == policy.config.history_length > 1
    else:  # the other families predict from the newest frame alone
        assert window == 1
    # attach_simulator defaults to ignoring the simulator: predictions do not change.
    obs = example(policy)
    before = first_chunk(policy, obs)
    policy.attach_simulator(object(), object())
    np.testing.assert_array_equal(first_chunk(policy, obs), before)
    if name in NO_CHECKPOINT:
        assert policy.model is None
        with pytest.raises(NotImplementedError, match='not trainable'):
            policy.set_statistics(None, 'default')
        with pytest.raises(NotImplementedError, match='not trainable'):
            policy.collate([])
        return
    import torch

    assert isinstance(policy.model, torch.nn.Module)


@pytest.mark.parametrize('name', CHECKPOINTED)
def test_training_hooks_give_a_batch_the_family_can_learn_from(name):
    import torch

    from vla_ros.actions.normalization import DatasetStatistics, StatisticsEntry
    from vla_ros.policies.torch_policy import bounds_statistics
    from vla_ros.training.data import collate, install_statistics

    policy = make_policy(name, seed=SEED)  # its statistics change: not the shared one
    try:
        spec = policy.spec
        space = spec.action_space
        stats = DatasetStatistics({'sim': StatisticsEntry(action=bounds_statistics(space))})
        install_statistics(policy, stats, 'sim')  # through the contract's set_statistics
        assert policy.unnorm_key == 'sim' and policy.statistics is stats
        obs = example(policy)
        sample = {'images': obs.images, 'instruction': obs.instruction,
                  'actions': np.tile((space.low + space.high) / 2, (spec.chunk_length, 1)),
                  'valid': np.ones(spec.chunk_length, bool), 'proprio': obs.proprio}
        batch = collate(policy, [sample, sample])
        loss = policy.training_loss(batch)
        loss = loss[0] if isinstance(loss, tuple) else loss
        assert torch.isfinite(torch.as_tensor(loss)).all()
    finally:
        policy.close()


def test_registry_listing_does_not_import_torch():
    code = ('import sys\n'
            'from vla_ros.policies.registry import available_policies\n'
            'names = available_policies()\n'
            'assert "scripted" in names, names\n'
            'heavy = [m for m in ("torch", "transformers", "peft") if m in sys.modules]\n'
            'assert not heavy, heavy\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


# --- the policy table ---------------------------------------------------------------------


@pytest.mark.parametrize('name', ALL_POLICIES)
def test_policy_table_row(built, name):
    policy = built(name)
    row = policy_row(name, policy=policy)
    spec = policy.spec
    assert row['name'] == name and row['family'] and row['description']
    assert row['action_head'] and row['action_type'] in ('discrete', 'continuous')
    assert row['chunk_length'] == spec.chunk_length
    assert row['control_period'] == spec.control_period
    assert row['action_dim'] == spec.action_space.dim
    if name in NO_CHECKPOINT:
        assert row['tiny_parameters'] is None and row['full_parameters'] is None
    else:
        assert row['tiny_parameters'] == policy.num_parameters() > 0
        assert row['full_parameters'] == type(policy).count_parameters('full')
        assert row['full_parameters'] > row['tiny_parameters']


def test_policy_table_covers_every_policy_and_reports_broken_ones():
    from vla_ros.policies.registry import register_policy, unregister_policy

    register_policy('_broken_family', 'vla_ros_no_such_module.policy:load', 'broken', 'broken')
    try:
        rows = {r['name']: r for r in policy_table(include_full=False)}
    finally:
        unregister_policy('_broken_family')
    assert set(rows) == set(REGISTERED) | {'_broken_family'}
    for name in CHECKPOINT_ONLY:  # listed, with the reason they cannot be built bare
        assert 'model_path is required' in rows[name]['error']
    assert 'vla_ros_no_such_module' in rows['_broken_family']['error']
    mlp = rows[TINY_MLP]
    assert mlp['action_head'] == 'MLP regression (tanh)' and mlp['full_parameters'] is None
    assert rows['scripted']['action_head'] == 'scripted (no model)'
