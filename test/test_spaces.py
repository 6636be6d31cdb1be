"""Tests for vla_ros.actions.spaces and vla_ros.paths."""

import sys
import types

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vla_ros import paths
from vla_ros.actions.spaces import (
    ActionDimension,
    ActionSpace,
    available_action_spaces,
    load_action_space,
)


def small_space():
    return ActionSpace('s', (
        ActionDimension('x', -1.0, 1.0, 'm'),
        ActionDimension('g', 0.0, 1.0, '1', 'binary'),
        ActionDimension('t', 0, 2, '1', 'discrete', num_categories=3),
    ))


@pytest.mark.parametrize('kwargs, match', [
    (dict(name='a', low=1.0, high=1.0), 'low'),
    (dict(name='a', low=2.0, high=1.0), 'must be <'),
    (dict(name='a', low=float('-inf'), high=1.0), 'finite'),
    (dict(name='a', low=float('nan'), high=1.0), 'finite'),
    (dict(name='a', low='0', high=1.0), 'number'),
    (dict(name='a', low=0.0, high=1.0, kind='angular'), 'unknown kind'),
    (dict(name='a', low=0.0, high=1.0, kind='discrete'), 'num_categories'),
    (dict(name='a', low=0.0, high=1.0, kind='discrete', num_categories=3), r'\[0, 2\]'),
    (dict(name='a', low=0.0, high=1.0, num_categories=2), 'only valid'),
    (dict(name='', low=0.0, high=1.0), 'non-empty'),
])
def test_dimension_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActionDimension(**kwargs)


def test_dimension_error_names_dimension():
    with pytest.raises(ValueError, match="'wrist'"):
        ActionDimension('wrist', 1.0, -1.0)


def test_space_rejects_duplicates_and_empty():
    d = ActionDimension('x', -1.0, 1.0)
    with pytest.raises(ValueError, match='duplicate'):
        ActionSpace('s', (d, d))
    with pytest.raises(ValueError, match='no dimensions'):
        ActionSpace('s', ())


def test_properties_and_index():
    s = small_space()
    assert s.dim == 3
    assert s.names == ('x', 'g', 't')
    np.testing.assert_array_equal(s.low, [-1.0, 0.0, 0.0])
    np.testing.assert_array_equal(s.high, [1.0, 1.0, 2.0])
    assert s.low.dtype == np.float64
    assert s.index('g') == 1
    with pytest.raises(KeyError, match="'x', 'g', 't'"):
        s.index('nope')


def test_clip_single_and_batch():
    s = small_space()
    np.testing.assert_array_equal(s.clip([2.0, -0.5, 5.0]), [1.0, 0.0, 2.0])
    batch = s.clip([[2.0, -0.5, 5.0], [0.25, 0.5, 1.0]])
    np.testing.assert_array_equal(batch, [[1.0, 0.0, 2.0], [0.25, 0.5, 1.0]])


@pytest.mark.parametrize('bad', [[0.0, 0.0], [[0.0] * 4], np.zeros((2, 2, 3)), 0.0])
def test_wrong_shape_rejected(bad):
    with pytest.raises(ValueError, match='expects shape'):
        small_space().clip(bad)


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
def test_non_finite_names_dimension(value):
    with pytest.raises(ValueError, match="'g'"):
        small_space().clip([[0.0, 0.0, 0.0], [0.0, value, 0.0]])


def test_validate():
    s = small_space()
    np.testing.assert_array_equal(s.validate([1.0, 0.0, 2.0]), [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="'x' value 1.5 outside"):
        s.validate([1.5, 0.0, 0.0])


@given(st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=3))
def test_clip_is_within_bounds_and_idempotent(values):
    s = small_space()
    c = s.clip(values)
    assert np.all(c >= s.low) and np.all(c <= s.high)
    np.testing.assert_array_equal(s.clip(c), c)
    s.validate(c)


def test_dict_round_trip():
    s = small_space()
    d = s.to_dict()
    assert 'num_categories' not in d['dimensions'][0]
    assert ActionSpace.from_dict(yaml.safe_load(yaml.safe_dump(d))) == s


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match='unknown keys'):
        ActionDimension.from_dict({'name': 'x', 'low': 0, 'high': 1, 'units': 'm'})
    with pytest.raises(ValueError, match='missing'):
        ActionDimension.from_dict({'name': 'x', 'low': 0})
    with pytest.raises(ValueError, match='dimensions'):
        ActionSpace.from_dict({'name': 's'})


def test_shipped_arm7():
    s = load_action_space('arm7')
    assert s.names == ('x', 'y', 'z', 'roll', 'pitch', 'yaw', 'gripper')
    np.testing.assert_allclose(s.high, [0.05] * 3 + [0.25] * 3 + [1.0])
    np.testing.assert_allclose(s.low, [-0.05] * 3 + [-0.25] * 3 + [0.0])
    assert [d.unit for d in s.dimensions] == ['m'] * 3 + ['rad'] * 3 + ['1']
    assert s.dimensions[-1].kind == 'binary'
    assert all(d.description for d in s.dimensions)


def test_shipped_mobile_manipulator():
    s = load_action_space('mobile_manipulator')
    assert s.dim == 11
    assert s.names[:7] == load_action_space('arm7').names
    assert s.names[7:] == ('base_x', 'base_y', 'base_yaw', 'terminate')
    term = s.dimensions[s.index('terminate')]
    assert (term.kind, term.num_categories, term.low, term.high) == ('discrete', 2, 0.0, 1.0)


def test_available_and_unknown_name():
    assert {'arm7', 'mobile_manipulator'} <= set(available_action_spaces())
    with pytest.raises(ValueError, match=r"unknown action space 'nope'.*arm7"):
        load_action_space('nope')


def test_load_from_path(tmp_path):
    path = tmp_path / 'custom.yaml'
    path.write_text(yaml.safe_dump(small_space().to_dict()))
    assert load_action_space(path) == small_space()
    assert load_action_space(str(path)) == small_space()
    with pytest.raises(FileNotFoundError):
        load_action_space(tmp_path / 'missing.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('name: b\ndimensions:\n  - {name: x, low: 1, high: 0}\n')
    with pytest.raises(ValueError, match='bad.yaml.*low'):
        load_action_space(bad)


def test_config_dir_source_checkout():
    assert (paths.config_dir('action_spaces') / 'arm7.yaml').is_file()


def test_config_dir_falls_back_to_ament_share(tmp_path, monkeypatch):
    (tmp_path / 'config' / 'action_spaces').mkdir(parents=True)
    fake = types.ModuleType('ament_index_python.packages')
    fake.get_package_share_directory = lambda pkg: str(tmp_path)
    monkeypatch.setitem(sys.modules, 'ament_index_python', types.ModuleType('ament'))
    monkeypatch.setitem(sys.modules, 'ament_index_python.packages', fake)
    monkeypatch.setattr(paths, '_SOURCE_CONFIG', tmp_path / 'absent')
    assert paths.config_dir('action_spaces') == tmp_path / 'config' / 'action_spaces'
