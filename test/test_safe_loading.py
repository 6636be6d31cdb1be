"""Loading safety and network hygiene.

Checkpoints load from safetensors only: pickle files (which run code when loaded) are
refused with a message that says so, model paths are checked before anything is read, a
corrupt or mismatched checkpoint gives a clear error, and loading opens no network
connection. The test environment keeps ROS discovery on this machine and the model hubs
offline.
"""

import dataclasses
import json
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest

from vla_ros.policies.contract import Observation, PolicyLoadError, PolicySpec

torch = pytest.importorskip('torch')

from vla_ros.policies.torch_policy import (  # noqa: E402 - after the torch check
    CONFIG_FILE,
    WEIGHTS_FILE,
    TorchPolicy,
    validate_model_dir,
)


@dataclasses.dataclass
class TinyConfig:
    action_space: str = 'arm7'
    hidden: int = 8
    chunk_length: int = 2


class TinyLinearPolicy(TorchPolicy):
    """Test-only family: one linear layer from a 4x4 thumbnail to a chunk."""

    family = 'tiny_linear_test'
    config_class = TinyConfig
    presets = {'tiny': {}}

    @classmethod
    def build_model(cls, config):
        return torch.nn.Sequential(torch.nn.Linear(48, config.hidden), torch.nn.Tanh(),
                                   torch.nn.Linear(config.hidden, config.chunk_length * 7))

    def make_spec(self, config):
        return PolicySpec(self.family, self.action_space, config.chunk_length,
                          image_size=(4, 4))

    def predict_normalized(self, observation):
        x = torch.from_numpy(observation.images['front'].astype(np.float32) / 255.0)
        out = self.model(x.reshape(1, -1).to(self.dtype))
        return out.reshape(self.config.chunk_length, 7).float().numpy()


class Pwned:
    """Unpickling this would create a file: proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture
def checkpoint(tmp_path):
    policy = TinyLinearPolicy(seed=3)
    path = policy.save_pretrained(tmp_path / 'ckpt')
    return policy, path


def test_round_trip_through_safetensors(checkpoint):
    policy, path = checkpoint
    assert sorted(p.name for p in path.iterdir()) == [
        'config.json', 'dataset_statistics.json', 'model.safetensors']
    loaded = TinyLinearPolicy.from_pretrained(path)
    obs = Observation.make_example(policy.spec)
    np.testing.assert_array_equal(loaded.predict_chunk(obs), policy.predict_chunk(obs))


def test_pickle_only_checkpoint_is_refused_without_unpickling(tmp_path):
    path = tmp_path / 'pickled'
    path.mkdir()
    (path / CONFIG_FILE).write_text(json.dumps({'family': TinyLinearPolicy.family,
                                                'config': {}}))
    marker = tmp_path / 'code_ran'
    for name in ('pytorch_model.bin', 'model.pt'):
        (path / name).write_bytes(pickle.dumps(Pwned(marker)))
    with pytest.raises(PolicyLoadError) as err:
        TinyLinearPolicy.from_pretrained(path)
    message = str(err.value)
    assert 'model.safetensors' in message and 'pickle' in message
    assert 'convert them to safetensors' in message
    assert "'model.pt', 'pytorch_model.bin'" in message
    assert not marker.exists()


@pytest.mark.parametrize('make, expected', [
    (lambda p: '', 'model_path is empty'),
    (lambda p: p / 'missing', 'does not exist'),
    (lambda p: (p / 'file.safetensors').write_bytes(b'x') and p / 'file.safetensors',
     'is not a directory'),
    (lambda p: (p / 'empty').mkdir() or p / 'empty', "lacks ['config.json', "
                                                      "'model.safetensors']"),
])
def test_model_paths_are_validated(tmp_path, make, expected):
    with pytest.raises(PolicyLoadError, match=expected.replace('[', r'\[').replace(']', r'\]')):
        validate_model_dir(make(tmp_path))


def test_wrong_family_and_unreadable_config_are_clear_errors(checkpoint):
    _, path = checkpoint
    meta = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**meta, 'family': 'octo'}))
    with pytest.raises(PolicyLoadError, match="holds a 'octo' checkpoint"):
        TinyLinearPolicy.from_pretrained(path)
    (path / CONFIG_FILE).write_text('{not json')
    with pytest.raises(PolicyLoadError, match='unreadable'):
        TinyLinearPolicy.from_pretrained(path)


def test_weights_that_do_not_match_the_config_are_refused(checkpoint, tmp_path):
    _, path = checkpoint
    meta = json.loads((path / CONFIG_FILE).read_text())
    meta['config']['hidden'] = 16
    (path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises((PolicyLoadError, RuntimeError), match='size mismatch|do not match'):
        TinyLinearPolicy.from_pretrained(path)


def test_corrupt_safetensors_is_an_error_not_a_crash(checkpoint):
    _, path = checkpoint
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyLoadError, match='model.safetensors: not a readable safetensors'):
        TinyLinearPolicy.from_pretrained(path)


def test_loading_opens_no_network_connection(checkpoint, monkeypatch):
    _, path = checkpoint
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError(f'network access attempted: {address}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket.socket, 'connect_ex', refuse)
    policy = TinyLinearPolicy.from_pretrained(path)
    policy.predict_chunk(Observation.make_example(policy.spec))
    assert attempts == []


def test_test_environment_stays_on_this_machine(ros_env):
    """conftest: localhost discovery, a private domain, offline model hubs (parents too)."""
    for env in (os.environ, ros_env):
        assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] in ('LOCALHOST', 'OFF')
        assert 1 <= int(env['ROS_DOMAIN_ID']) <= 232 and int(env['ROS_DOMAIN_ID']) != 0
        assert env['HF_HUB_OFFLINE'] == '1' and env['TRANSFORMERS_OFFLINE'] == '1'
