import numpy as np
import pytest

from vla_ros.datasets.episodes import Episode, EpisodeDataset


def make_episode(n=5, instruction='pick up the red cube'):
    rng = np.random.default_rng(n)
    return Episode(instruction, 'arm7', 0.1,
                   {'front': rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)},
                   rng.normal(size=(n, 7)).astype(np.float32), np.arange(n) * 0.1,
                   proprio=rng.normal(size=(n, 9)), metadata={'task': 'pick', 'success': True})


def test_save_load_round_trip(tmp_path):
    dataset = EpisodeDataset([make_episode(5), make_episode(3, 'push the blue cylinder')])
    dataset.save(tmp_path)
    loaded = EpisodeDataset.load(tmp_path)
    assert len(loaded) == 2 and loaded.num_steps == 8
    a, b = dataset.episodes[1], loaded.episodes[1]
    assert b.instruction == 'push the blue cylinder' and b.metadata == {'task': 'pick',
                                                                       'success': True}
    np.testing.assert_array_equal(a.images['front'], b.images['front'])
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.proprio, b.proprio)


def test_samples_pad_with_last_action_and_mask():
    episode = make_episode(3)
    samples = list(EpisodeDataset([episode]).samples(chunk_length=4))
    assert len(samples) == 3
    last = samples[-1]
    np.testing.assert_array_equal(last['actions'], episode.actions[[2, 2, 2, 2]])
    assert last['valid'].tolist() == [True, False, False, False]
    assert samples[0]['valid'].tolist() == [True, True, True, False]


def test_statistics_and_validation():
    stats = EpisodeDataset([make_episode(50)]).statistics('sim')
    entry = stats.select('sim')
    assert entry.num_transitions == 50 and entry.action.dim == 7
    with pytest.raises(ValueError, match='NaN'):
        Episode('x', 'arm7', 0.1, {}, np.full((2, 7), np.nan), np.arange(2))
    with pytest.raises(ValueError, match='uint8'):
        Episode('x', 'arm7', 0.1, {'front': np.zeros((2, 8, 8, 3))}, np.zeros((2, 7)),
                np.arange(2))
    with pytest.raises(ValueError, match='mix'):
        EpisodeDataset([make_episode(2), Episode('x', 'arm7', 0.2, {}, np.zeros((2, 7)),
                                                 np.arange(2))])
