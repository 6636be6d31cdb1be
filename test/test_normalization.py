"""Tests for vla_ros.actions.normalization."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.actions.normalization import (
    ActionStatistics,
    DatasetStatistics,
    Normalizer,
    StatisticsEntry,
    UnnormKeyError,
    compute_statistics,
    load_statistics,
    save_statistics,
)


def stats(mask=None):
    # dim 0: ordinary; dim 1: zero range (q01 == q99); dim 2: gripper left raw by the mask.
    return ActionStatistics(
        mean=[0.1, 0.5, 0.5], std=[0.2, 0.0, 0.4], min=[-1.0, 0.5, 0.0], max=[1.0, 0.5, 1.0],
        q01=[-0.5, 0.5, 0.0], q99=[0.5, 0.5, 1.0],
        mask=[True, True, False] if mask is None else mask)


def entry_json(dim=2):
    v = [0.0] * dim
    return {'action': {'mean': v, 'std': [1.0] * dim, 'min': [-1.0] * dim, 'max': [1.0] * dim,
                       'q01': [-0.5] * dim, 'q99': [0.5] * dim},
            'num_transitions': 10, 'num_trajectories': 2}


def test_hand_computed_unnormalize_bounds():
    n = Normalizer(stats())
    # dim 0: 0.5 * (0.5 + 1) * (0.5 - -0.5) + -0.5 = 0.25; dim 1 zero range -> q01;
    # dim 2 masked -> raw.
    np.testing.assert_allclose(n.unnormalize([0.5, 0.3, 0.7]), [0.25, 0.5, 0.7])
    np.testing.assert_allclose(n.normalize([0.25, 0.9, 0.7]), [0.5, 0.0, 0.7])


def test_bounds_normalize_clips():
    n = Normalizer(stats())
    np.testing.assert_allclose(n.normalize([[3.0, 0.5, 1.0], [-3.0, 0.5, 1.0]]),
                               [[1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]])


@given(st.floats(-0.5, 0.5), st.floats(-10, 10))
def test_bounds_round_trip(a0, a2):
    n = Normalizer(stats())
    a = np.array([a0, 0.5, a2])
    back = n.unnormalize(n.normalize(a))
    np.testing.assert_allclose(back, a, atol=1e-12)


@given(st.floats(-100, 100), st.floats(-100, 100))
def test_normal_round_trip(a0, a2):
    n = Normalizer(stats(), mode='normal')
    a = np.array([a0, 0.5, a2])
    x = n.normalize(a)
    assert x[0] == pytest.approx((a0 - 0.1) / (0.2 + 1e-8))
    assert x[1] == 0.0  # std 0: (0.5 - 0.5) / eps
    assert x[2] == a2  # masked
    np.testing.assert_allclose(n.unnormalize(x), a, atol=1e-9)


def test_mask_leaves_dims_raw_in_both_modes():
    s = stats(mask=[False, False, False])
    a = np.array([[0.3, 7.0, -2.0]])
    for mode in ('bounds_q99', 'normal'):
        n = Normalizer(s, mode=mode)
        np.testing.assert_array_equal(n.normalize(a), a)
        np.testing.assert_array_equal(n.unnormalize(a), a)


def test_normalizer_rejects_bad_input():
    n = Normalizer(stats())
    with pytest.raises(ValueError, match='dimension 1'):
        n.normalize([0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match='non-finite'):
        n.unnormalize([0.0, 0.0, np.inf])
    with pytest.raises(ValueError, match='last dimension'):
        n.normalize([0.0, 0.0])
    with pytest.raises(ValueError, match='mode'):
        Normalizer(stats(), mode='minmax')


@pytest.mark.parametrize('override, match', [
    (dict(q01=[1.0, 0.5, 0.0]), 'q01 > q99'),
    (dict(std=[-0.1, 0.0, 0.4]), 'negative std'),
    (dict(mean=[0.0, 0.0]), 'different lengths'),
    (dict(mask=[True, False]), 'different lengths'),
    (dict(mask=[1, 0, 1]), 'booleans'),
    (dict(max=[np.nan, 0.5, 1.0]), 'non-finite'),
    (dict(min=[5.0, 0.5, 0.0]), 'min > max'),
    (dict(mean='abc'), 'numeric|1-D'),
])
def test_statistics_validation(override, match):
    kwargs = stats().to_dict()
    kwargs.update(override)
    with pytest.raises(ValueError, match=match):
        ActionStatistics(**kwargs)


def test_mask_defaults_to_all_true():
    d = stats().to_dict()
    del d['mask']
    assert ActionStatistics(**d).mask.tolist() == [True, True, True]


def test_select_keys():
    one = DatasetStatistics.from_dict({'bridge_orig': entry_json()})
    assert one.select().num_transitions == 10
    assert one.select('bridge_orig') is one['bridge_orig']
    many = DatasetStatistics.from_dict({'bridge_orig': entry_json(), 'fractal': entry_json()})
    with pytest.raises(UnnormKeyError, match=r"mandatory.*\['bridge_orig', 'fractal'\]"):
        many.select()
    with pytest.raises(UnnormKeyError, match=r"'kuka'.*\['bridge_orig', 'fractal'\]"):
        many.select('kuka')
    assert issubclass(UnnormKeyError, ValueError)
    assert len(many) == 2 and set(many) == {'bridge_orig', 'fractal'}


def test_save_load_round_trip(tmp_path):
    proprio = compute_statistics(np.arange(12.0).reshape(4, 3))
    data = {'a': StatisticsEntry(stats(), proprio, 100, 3), 'b': StatisticsEntry(stats())}
    path = tmp_path / 'dataset_statistics.json'
    save_statistics(path, data)
    raw = json.loads(path.read_text())
    assert raw['a']['action']['mask'] == [True, True, False]
    assert 'proprio' not in raw['b']
    loaded = load_statistics(path)
    assert loaded.to_dict() == DatasetStatistics(data).to_dict()
    a = loaded.select('a')
    np.testing.assert_array_equal(a.action.q99, stats().q99)
    np.testing.assert_array_equal(a.proprio.mean, proprio.mean)
    assert (a.num_transitions, a.num_trajectories) == (100, 3)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        load_statistics(tmp_path / 'missing.json')
    bad = tmp_path / 'bad.json'
    bad.write_text('{"a": ')
    with pytest.raises(ValueError, match='invalid JSON'):
        load_statistics(bad)
    e = entry_json()
    del e['action']['q99']
    bad.write_text(json.dumps({'bridge_orig': e}))
    with pytest.raises(ValueError, match=r"'bridge_orig'.action.*q99"):
        load_statistics(bad)
    bad.write_text(json.dumps({'bridge_orig': {'proprio': {}}}))
    with pytest.raises(ValueError, match="'bridge_orig'.*action"):
        load_statistics(bad)
    e = entry_json()
    e['num_transitions'] = 'many'
    bad.write_text(json.dumps({'k': e}))
    with pytest.raises(ValueError, match='num_transitions'):
        load_statistics(bad)


def test_openvla_style_file_loads(tmp_path):
    # Shape of a real OpenVLA entry: 7-D action, gripper unmasked, 7-D proprio of zeros.
    z = [0.0] * 7
    e = {'action': {'mean': z, 'std': z, 'max': z, 'min': z, 'q01': z, 'q99': z,
                    'mask': [True] * 6 + [False]},
         'proprio': {'mean': z, 'std': z, 'max': z, 'min': z, 'q01': z, 'q99': z},
         'num_transitions': 2135463, 'num_trajectories': 60064}
    path = tmp_path / 's.json'
    path.write_text(json.dumps({'bridge_orig': e}))
    entry = load_statistics(path).select()
    assert entry.action.mask.tolist() == [True] * 6 + [False]
    assert entry.proprio.mask.all()


def test_compute_statistics():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1000, 4))
    s = compute_statistics(a, mask=[True, True, True, False])
    np.testing.assert_allclose(s.mean, a.mean(0))
    np.testing.assert_allclose(s.std, a.std(0))
    np.testing.assert_allclose(s.q01, np.quantile(a, 0.01, axis=0))
    np.testing.assert_allclose(s.q99, np.quantile(a, 0.99, axis=0))
    np.testing.assert_array_equal(s.min, a.min(0))
    assert s.mask.tolist() == [True, True, True, False]
    x = Normalizer(s).normalize(a)
    assert np.all(np.abs(x[:, :3]) <= 1.0)
    with pytest.raises(ValueError, match='shape'):
        compute_statistics(np.zeros(5))
    with pytest.raises(ValueError, match='non-finite'):
        compute_statistics([[np.nan]])
