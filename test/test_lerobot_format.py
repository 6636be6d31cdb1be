"""The LeRobot checkpoint format shared by pi0/pi05 and SmolVLA (vla_ros.policies.lerobot)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from vla_ros.policies.contract import PolicyLoadError
from vla_ros.policies.lerobot.processors import (
    FeatureNormalizer,
    find_step,
    read_steps,
    step_normalizer,
)
from vla_ros.policies.lerobot.weights import SafetensorsMap, read_header
from vla_ros.policies.lerobot_pi.fixtures import write_checkpoint, write_tokenizer
from vla_ros.policies.registry import make_policy
from vla_ros.policies.strict_loading import weight_mismatch_error

FEATURES = {'observation.state': {'type': 'STATE', 'shape': [3]},
            'action': {'type': 'ACTION', 'shape': [3]},
            'observation.images.top': {'type': 'VISUAL', 'shape': [3, 4, 4]},
            'observation.images.empty_camera_0': {'type': 'VISUAL', 'shape': [3, 4, 4]}}


def _normalizer(mode, stats):
    return FeatureNormalizer(FEATURES, {'STATE': 'IDENTITY', 'ACTION': mode,
                                        'VISUAL': 'MEAN_STD'}, stats)


def test_min_max_inverse_uses_lerobots_expression_order():
    low = torch.tensor([-0.7, 0.1, 3.0])
    high = torch.tensor([1.3, 0.9, 7.1])
    norm = _normalizer('MIN_MAX', {'action': {'min': low, 'max': high}})
    x = torch.linspace(-1.3, 1.3, 3000, dtype=torch.float32).reshape(-1, 3)
    span = high - low
    # Bit-exact with LeRobot's ``(x + 1) / 2 * (max - min) + min`` ...
    assert torch.equal(norm.apply('action', x, inverse=True), (x + 1) / 2 * span + low)
    # (Halving is exact in binary floating point, so the old ``(x + 1) * span / 2 + low``
    # gives the same bits outside the subnormal range: the order is kept for fidelity.)
    # QUANTILES keeps LeRobot's other order.
    q = _normalizer('QUANTILES', {'action': {'q01': low, 'q99': high}})
    assert torch.equal(q.apply('action', x, inverse=True), (x + 1) * span / 2 + low)
    back = norm.apply('action', norm.apply('action', x, inverse=True))
    torch.testing.assert_close(back, x, rtol=0, atol=1e-4)


def test_a_normalized_feature_without_statistics_is_refused():
    # The action is MIN_MAX but the file has no statistics for it: refused, not passed
    # through (LeRobot would silently return normalized actions as raw ones).
    with pytest.raises(PolicyLoadError, match=r"'action' is normalized MIN_MAX but its "
                                              r"statistics lack \['min', 'max'\]"):
        _normalizer('MIN_MAX', {'observation.images.top': {
            'mean': torch.zeros(3), 'std': torch.ones(3)}}).check('here')


def test_identity_features_and_blank_cameras_need_no_statistics():
    stats = {'action': {'mean': torch.zeros(3), 'std': torch.ones(3)},
             'observation.images.top': {'mean': torch.zeros(3), 'std': torch.ones(3)}}
    norm = _normalizer('MEAN_STD', stats)
    norm.check('here')  # the IDENTITY state and the empty camera have none: fine
    x = torch.randn(2, 3)
    assert norm.apply('observation.state', x) is x
    assert norm.apply('not.a.feature', x) is x  # features the step does not list
    image = torch.rand(1, 3, 4, 4)  # per-channel statistics broadcast over (C, H, W)
    torch.testing.assert_close(norm.apply('observation.images.top', image),
                               (image - 0) / (1 + 1e-8))


def test_statistics_of_the_wrong_width_and_unknown_modes_are_refused():
    with pytest.raises(PolicyLoadError, match=r'action.std has shape \(2,\)'):
        _normalizer('MEAN_STD', {'action': {'mean': torch.zeros(3), 'std': torch.ones(2)},
                                 'observation.images.top': {'mean': torch.zeros(3),
                                                            'std': torch.ones(3)}}
                    ).check('here')
    with pytest.raises(PolicyLoadError, match="unsupported normalization mode 'LOG'"):
        _normalizer('LOG', {}).check('here')


def test_pipeline_steps_load_their_statistics_and_stay_inside_the_checkpoint(tmp_path):
    save_file({'action.min': -torch.ones(3), 'action.max': torch.ones(3)},
              str(tmp_path / 'stats.safetensors'))
    step = {'registry_name': 'unnormalizer_processor', 'state_file': 'stats.safetensors',
            'config': {'features': {'action': FEATURES['action']},
                       'norm_map': {'ACTION': 'MIN_MAX'}}}
    (tmp_path / 'p.json').write_text(json.dumps({'steps': [step]}))
    steps = read_steps(tmp_path, 'p')
    norm = step_normalizer(find_step(steps, 'unnormalizer_processor', 'p'), 'p.json')
    torch.testing.assert_close(norm.feature('action').unnormalize(torch.zeros(3)),
                               torch.zeros(3))
    step['state_file'] = '../stats.safetensors'
    (tmp_path / 'p.json').write_text(json.dumps({'steps': [step]}))
    with pytest.raises(PolicyLoadError, match='leaves the checkpoint'):
        read_steps(tmp_path, 'p')
    with pytest.raises(PolicyLoadError, match='migrate_policy_normalization'):
        read_steps(tmp_path, 'absent')


def test_weight_mismatch_error_lists_every_kind_of_problem(tmp_path):
    assert weight_mismatch_error('f', 'the model') is None
    error = weight_mismatch_error('f', 'the model', ['b', 'a'], ['x'], ['w (2,) (model (3,))'])
    assert str(error) == ('f: weights do not match the model; missing 2: a, b; '
                          'unexpected 1: x; mis-shaped 1: w (2,) (model (3,))')
    many = weight_mismatch_error('f', 'm', [f'k{i:02d}' for i in range(25)])
    assert str(many).endswith('k19 ... and 5 more')


def test_safetensors_map_reads_shapes_and_values_without_copying(tmp_path):
    path = tmp_path / 'w.safetensors'
    save_file({'a': torch.arange(6, dtype=torch.float32).reshape(2, 3),
               'b': torch.ones(4, dtype=torch.bfloat16)}, str(path))
    assert {k: e['shape'] for k, e in read_header(path)[1].items()} == {'a': [2, 3],
                                                                         'b': [4]}
    source = SafetensorsMap(path)
    assert source.shape('a') == (2, 3)
    assert torch.equal(source.tensor('a'), torch.arange(6.0).reshape(2, 3))
    assert source.tensor('b').dtype == torch.bfloat16
    (tmp_path / 'bad.safetensors').write_bytes(b'\x01')
    with pytest.raises(PolicyLoadError, match='not a readable safetensors file'):
        SafetensorsMap(tmp_path / 'bad.safetensors')


def test_pi_checkpoint_without_action_statistics_is_refused(tmp_path):
    # Before the shared format, pi0 passed an action without statistics through unchanged.
    tok = write_tokenizer(tmp_path / 'tok')
    path = write_checkpoint(tmp_path / 'ck', 'pi0')
    post = path / 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'
    save_file({'action.min': torch.zeros(7)}, str(post))
    with pytest.raises(PolicyLoadError, match=r"'action' is normalized MEAN_STD but its "
                                              r"statistics lack \['mean', 'std'\]"):
        make_policy('pi0', model_path=str(path), tokenizer_path=str(tok))
