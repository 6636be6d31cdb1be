"""Tests for vla_ros.actions.tokenizers against literal statements of each convention."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vla_ros.actions.spaces import load_action_space
from vla_ros.actions.tokenizers import (
    MalformedActionText,
    OpenVlaActionTokenizer,
    Rt1ActionTokenizer,
    bins_to_text,
    text_to_bins,
)

ARM7 = load_action_space('arm7')
MOBILE = load_action_space('mobile_manipulator')
TOL = 1e-12  # float rounding slack on the exact bounds
unit = st.floats(0.0, 1.0)


def in_range(space):
    """Strategy: one in-bounds action for ``space`` (continuous dims only)."""
    return st.lists(unit, min_size=space.dim, max_size=space.dim).map(
        lambda u: space.low + np.array(u) * (space.high - space.low))


# ---------------------------------------------------------------- RT-1


def test_rt1_hand_computed():
    tok = Rt1ActionTokenizer(ARM7)
    a = [0.0, 0.05, -0.05, 0.1, -0.25, 0.25, 0.5]
    # x: 0.05/0.1*255 = 127.5 -> 127; roll: 0.35/0.5*255 = 178.5 -> 178; gripper 127.5 -> 127
    np.testing.assert_array_equal(tok.tokenize(a), [127, 255, 0, 178, 0, 255, 127])
    np.testing.assert_allclose(
        tok.detokenize([127, 255, 0, 178, 0, 255, 127]),
        [-0.05 + 127 / 255 * 0.1, 0.05, -0.05, -0.25 + 178 / 255 * 0.5, -0.25, 0.25,
         127 / 255])


def test_rt1_matches_literal_convention():
    tok = Rt1ActionTokenizer(ARM7)
    rng = np.random.default_rng(0)
    acts = rng.uniform(ARM7.low * 1.2, ARM7.high * 1.2, size=(500, 7))
    expected = [[int((min(max(v, lo), hi) - lo) / (hi - lo) * 255)
                 for v, lo, hi in zip(row, ARM7.low, ARM7.high, strict=True)] for row in acts]
    got = tok.tokenize(acts)
    assert got.dtype == np.int64 and got.shape == (500, 7)
    np.testing.assert_array_equal(got, expected)


@given(in_range(ARM7))
def test_rt1_round_trip_within_one_bin_and_below(a):
    tok = Rt1ActionTokenizer(ARM7)
    back = tok.detokenize(tok.tokenize(a))
    assert np.all(back <= a + TOL)  # truncation: never above the input
    assert np.all(a - back <= tok.bin_width + TOL)


@given(st.lists(st.floats(-1e9, 1e9), min_size=7, max_size=7))
def test_rt1_tokens_always_in_range(a):
    t = Rt1ActionTokenizer(ARM7).tokenize(a)
    assert np.all((t >= 0) & (t <= 255))


def test_rt1_out_of_range_clips_to_edge_tokens():
    tok = Rt1ActionTokenizer(ARM7)
    np.testing.assert_array_equal(tok.tokenize([-9.0] * 7), [0] * 7)
    np.testing.assert_array_equal(tok.tokenize([9.0] * 7), [255] * 7)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_rt1_rejects_non_finite_naming_dimension(value):
    a = [0.0] * 7
    a[3] = value
    with pytest.raises(ValueError, match="'roll'"):
        Rt1ActionTokenizer(ARM7).tokenize(a)


def test_rt1_discrete_round_trip_and_rounding():
    tok = Rt1ActionTokenizer(MOBILE)
    a = np.zeros((4, 11))
    a[:, -1] = [0.0, 1.0, 0.4, 0.6]
    t = tok.tokenize(a)
    np.testing.assert_array_equal(t[:, -1], [0, 1, 0, 1])
    np.testing.assert_array_equal(tok.detokenize(t)[:, -1], [0.0, 1.0, 0.0, 1.0])
    assert tok.tokenize([0.0] * 10 + [7.0])[-1] == 1


def test_rt1_detokenize_rejects_bad_tokens():
    tok = Rt1ActionTokenizer(MOBILE)
    good = [0] * 11
    with pytest.raises(ValueError, match="'x'.*255"):
        tok.detokenize([256] + good[1:])
    with pytest.raises(ValueError, match="'y'"):
        tok.detokenize([0, -1] + good[2:])
    with pytest.raises(ValueError, match=r"'terminate'.*\[0, 1\]"):
        tok.detokenize(good[:10] + [2])
    with pytest.raises(ValueError, match='integer'):
        tok.detokenize([0.5] * 11)
    with pytest.raises(ValueError, match='shape'):
        tok.detokenize([0] * 7)
    np.testing.assert_array_equal(tok.detokenize(np.zeros(11)), MOBILE.low)


def test_rt1_num_bins_validation():
    with pytest.raises(ValueError):
        Rt1ActionTokenizer(ARM7, num_bins=1)


# ---------------------------------------------------------------- OpenVLA


def openvla_reference_encode(a, vocab_size=32000, n_bins=256):
    """Literal re-statement of OpenVLA's ActionTokenizer.__call__ (returns ids)."""
    bins = np.linspace(-1, 1, n_bins)
    a = np.clip(a, a_min=-1.0, a_max=1.0)
    discretized = np.digitize(a, bins)
    return vocab_size - discretized


def openvla_reference_decode(ids, vocab_size=32000, n_bins=256):
    """Literal re-statement of OpenVLA's ActionTokenizer.decode_token_ids_to_actions."""
    bins = np.linspace(-1, 1, n_bins)
    centers = (bins[:-1] + bins[1:]) / 2.0
    discretized = vocab_size - ids
    discretized = np.clip(discretized - 1, a_min=0, a_max=centers.shape[0] - 1)
    return centers[discretized]


OV = OpenVlaActionTokenizer()


def test_openvla_tables():
    assert OV.bins.shape == (256,) and OV.centers.shape == (255,)
    np.testing.assert_array_equal(OV.action_token_ids, np.arange(31744, 32000))
    assert OV.is_action_token([31743, 31744, 31999, 32000]).tolist() == [False, True, True, False]


def test_openvla_hand_computed():
    # 0.0 lies in [bins[127], bins[128]) -> digitize 128 -> 32000 - 128.
    assert OV.encode(0.0) == 31872
    assert OV.encode(-1.0) == 31999  # digitize(-1) = 1
    assert OV.encode(1.0) == 31744  # digitize(1) = 256: the quirk
    assert OV.encode(0.999) == 31745
    assert OV.decode(31999) == pytest.approx(-1 + 1 / 255)
    assert OV.decode(31744) == pytest.approx(1 - 1 / 255)  # k = 255 clipped to 254
    assert OV.decode(31745) == pytest.approx(1 - 1 / 255)
    assert OV.decode(31872) == pytest.approx(0.0, abs=1e-15)


def test_openvla_matches_literal_convention():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.uniform(-1.3, 1.3, 2000), OV.bins, [-1.0, 1.0, 0.0]])
    ids = OV.encode(a)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, openvla_reference_encode(a))
    np.testing.assert_array_equal(OV.decode(ids), openvla_reference_decode(ids))
    all_ids = OV.action_token_ids
    np.testing.assert_array_equal(OV.decode(all_ids), openvla_reference_decode(all_ids))


@given(st.floats(-1.0, 1.0))
def test_openvla_round_trip_within_half_bin(a):
    # Bin width is 2/255; decoding returns the center of the bin holding a (for a = 1 the
    # last bin's center), so the error is at most half a bin: 1/255.
    ids = OV.encode(a)
    assert 31744 <= ids <= 31999
    back = OV.decode(ids)
    assert abs(back - a) <= 1 / 255 + TOL
    if a < 1.0:
        k = 31999 - int(ids)  # bin index: bins[k] <= a < bins[k + 1]
        assert OV.bins[k] <= a < OV.bins[k + 1]


def test_openvla_edges_exact_error():
    just_below = np.nextafter(1.0, 0.0)
    assert OV.encode(just_below) == 31745
    for a in (-1.0, 1.0, just_below):
        assert abs(OV.decode(OV.encode(a)) - a) == pytest.approx(1 / 255)


@given(arrays(np.float64, st.integers(1, 8), elements=st.floats(-1e6, 1e6)))
def test_openvla_out_of_range_clips(a):
    np.testing.assert_array_equal(OV.encode(a), OV.encode(np.clip(a, -1, 1)))


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
def test_openvla_rejects_non_finite(value):
    with pytest.raises(ValueError, match='non-finite'):
        OV.encode([0.0, value])


def test_openvla_decode_rejects_non_action_ids():
    with pytest.raises(ValueError, match='not action tokens'):
        OV.decode([31743])
    with pytest.raises(ValueError, match='not action tokens'):
        OV.decode([32000])


def test_openvla_custom_vocab_shape_preserved():
    tok = OpenVlaActionTokenizer(vocab_size=1000, num_bins=11)
    ids = tok.encode(np.zeros((2, 3)))
    assert ids.shape == (2, 3)
    assert tok.is_action_token(ids).all()
    assert tok.decode(ids).shape == (2, 3)


# ---------------------------------------------------------------- RT-2 style text


def test_text_round_trip():
    t = np.array([128, 91, 241, 0, 255])
    s = bins_to_text(t)
    assert s == '128 91 241 0 255'
    np.testing.assert_array_equal(text_to_bins(s, 5), t)
    assert text_to_bins(s, 5).dtype == np.int64


def test_text_tolerates_extra_whitespace():
    np.testing.assert_array_equal(text_to_bins('  1   2\t3\n', 3), [1, 2, 3])


@pytest.mark.parametrize('text, match', [
    ('', 'empty'),
    ('   \n', 'empty'),
    ('1 2', 'expected 3'),
    ('1 2 3 4', 'expected 3'),
    ('1 two 3', 'integers'),
    ('1 2.0 3', 'integers'),
    ('1 -2 3', 'integers'),
    ('1 +2 3', 'integers'),
    ('1 2 256', 'outside'),
    ('1 2 99999999999999999999999', 'outside'),
    ('1,2,3', 'expected 3'),
])
def test_text_rejects_malformed(text, match):
    with pytest.raises(MalformedActionText, match=match):
        text_to_bins(text, 3)


def test_malformed_is_value_error_and_non_str_rejected():
    assert issubclass(MalformedActionText, ValueError)
    with pytest.raises(MalformedActionText):
        text_to_bins(None, 3)
    assert text_to_bins('9', 1, num_bins=10).tolist() == [9]
    with pytest.raises(MalformedActionText):
        text_to_bins('10', 1, num_bins=10)
