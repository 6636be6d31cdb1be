"""Policy contract, registry and the scripted test policy."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vla_ros.actions.spaces import load_action_space
from vla_ros.policies.contract import (
    InvalidChunkError,
    InvalidObservationError,
    Observation,
    Policy,
    PolicyLoadError,
    PolicySpec,
)
from vla_ros.policies.registry import (
    available_policies,
    make_policy,
    policy_info,
    register_policy,
    registered,
    unregister_policy,
)
from vla_ros.policies.scripted import ScriptedPolicy, ScriptedPolicyFault


@pytest.fixture
def policy():
    return ScriptedPolicy()


def obs_for(policy, instruction='pick up the red cube', stamp=0.0):
    return Observation.make_example(policy.spec, instruction=instruction, stamp=stamp)


# --- scripted policy --------------------------------------------------------------------


@pytest.mark.parametrize('pattern', ['constant', 'sine', 'ramp'])
@pytest.mark.parametrize('space', ['arm7', 'mobile_manipulator'])
def test_scripted_shape_dtype_bounds_and_determinism(pattern, space):
    p = ScriptedPolicy(action_space=space, pattern=pattern, chunk_length=5)
    obs = obs_for(p, stamp=12.3)
    a, b = p.predict_chunk(obs), p.predict_chunk(obs)
    dim = load_action_space(space).dim
    assert a.shape == (5, dim) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, ScriptedPolicy(action_space=space, pattern=pattern,
                                                    chunk_length=5).predict_chunk(obs))
    space_ = p.spec.action_space
    assert (a >= space_.low - 1e-7).all() and (a <= space_.high + 1e-7).all()


def test_constant_values_and_clipping():
    p = ScriptedPolicy(velocity=(0.02, -0.01, 1.0), gripper=0.0)
    a = p.predict_chunk(obs_for(p))
    # z = 1.0 m/step is clipped to the arm7 bound 0.05
    np.testing.assert_allclose(a[0], [0.02, -0.01, 0.05, 0, 0, 0, 0.0], atol=1e-7)
    assert (a == a[0]).all()


def test_mobile_manipulator_terminate_is_continue():
    p = ScriptedPolicy(action_space='mobile_manipulator', velocity=[0.01] * 9)
    a = p.predict_chunk(obs_for(p))
    names = p.spec.action_space.names
    assert a[0, names.index('terminate')] == 0.0
    assert a[0, names.index('gripper')] == 1.0
    assert a[0, names.index('base_yaw')] == pytest.approx(0.01)


def test_sine_depends_on_stamp_and_ramp_on_index():
    p = ScriptedPolicy(pattern='sine')
    a, b = p.predict_chunk(obs_for(p, stamp=1.0)), p.predict_chunk(obs_for(p, stamp=1.3))
    assert not np.allclose(a, b)
    # row i of a chunk at stamp t equals row 0 of a chunk at t + i * control_period
    np.testing.assert_allclose(a[3], p.expected_chunk('pick', 1.3)[0], atol=1e-6)
    r = ScriptedPolicy(pattern='ramp', chunk_length=4).predict_chunk(obs_for(p))
    np.testing.assert_allclose(r[:, 0], [0.005, 0.01, 0.015, 0.02], atol=1e-7)


def test_instruction_changes_output(policy):
    go = policy.predict_chunk(obs_for(policy, 'move the cube right'))
    left = policy.predict_chunk(obs_for(policy, 'move the cube LEFT'))
    stop = policy.predict_chunk(obs_for(policy, 'Stop!'))
    np.testing.assert_allclose(left[:, :6], -go[:, :6])
    assert (stop[:, :6] == 0).all() and (stop[:, 6] == 1.0).all()
    assert not np.array_equal(go, left)


def test_latency_is_honoured_and_settable(policy):
    obs = obs_for(policy)
    policy.latency = 0.05
    t0 = time.monotonic()
    policy.predict_chunk(obs)
    assert time.monotonic() - t0 >= 0.05
    policy.latency = 0.0
    t0 = time.monotonic()
    policy.predict_chunk(obs)
    assert time.monotonic() - t0 < 0.05


def test_fail_raise_after_n_calls():
    p = ScriptedPolicy(fail_mode='raise', fail_after=2)
    obs = obs_for(p)
    p.predict_chunk(obs)
    p.predict_chunk(obs)
    with pytest.raises(ScriptedPolicyFault, match='call 3'):
        p.predict_chunk(obs)


@pytest.mark.parametrize('mode, match', [('nan', 'non-finite'), ('wrong_shape', 'shape')])
def test_bad_chunks_caught_by_check_chunk(mode, match):
    p = ScriptedPolicy(fail_mode=mode)
    raw = p.predict_chunk(obs_for(p))  # returned unchecked, like a buggy model would
    with pytest.raises(InvalidChunkError, match=match):
        p.check_chunk(raw)


def test_hang_blocks_until_released():
    p = ScriptedPolicy(fail_mode='hang', fail_after=1)
    obs = obs_for(p)
    p.predict_chunk(obs)
    errors = []

    def call():
        try:
            p.predict_chunk(obs)
        except ScriptedPolicyFault as e:
            errors.append(e)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(0.2)
    assert worker.is_alive()
    p.release()
    worker.join(2.0)
    assert not worker.is_alive() and errors


def test_reset_keeps_fault_counter(policy):
    policy.predict_chunk(obs_for(policy))
    policy.reset()
    assert policy.resets == 1 and policy.calls == 1


@pytest.mark.parametrize('kwargs', [{'pattern': 'zigzag'}, {'fail_mode': 'explode'},
                                    {'velocity': [0.0] * 7}, {'latency': -1}])
def test_scripted_rejects_bad_config(kwargs):
    with pytest.raises(ValueError):
        ScriptedPolicy(**kwargs)


# --- contract checks --------------------------------------------------------------------


def test_check_chunk_accepts_and_converts(policy):
    chunk = np.zeros((8, 7), dtype=np.float64)
    out = policy.check_chunk(chunk)
    assert out.dtype == np.float32 and out.shape == (8, 7)
    with pytest.raises(InvalidChunkError, match=r"step 2 dimension 'yaw'"):
        bad = chunk.copy()
        bad[2, 5] = np.inf
        policy.check_chunk(bad)
    with pytest.raises(InvalidChunkError, match=r'\(8, 7\)'):
        policy.check_chunk(np.zeros(7))


@pytest.mark.parametrize('mutate, match', [
    (lambda o: o.images.pop('front'), "missing camera 'front'"),
    (lambda o: o.images.update(front=np.zeros((224, 224, 3), np.float32)), 'uint8'),
    (lambda o: o.images.update(front=np.zeros((224, 200, 3), np.uint8)), r'\(224, 200, 3\)'),
    (lambda o: o.images.update(front=np.zeros((224, 224), np.uint8)), 'shape'),
    (lambda o: o.images.update(front=[[0]]), 'numpy array'),
    (lambda o: setattr(o, 'instruction', '   '), 'instruction is empty'),
    (lambda o: setattr(o, 'instruction', 42), 'instruction must be a string'),
    (lambda o: setattr(o, 'stamp', float('nan')), 'stamp'),
])
def test_bad_observations_rejected(policy, mutate, match):
    obs = obs_for(policy)
    mutate(obs)
    with pytest.raises(InvalidObservationError, match=match):
        policy.predict_chunk(obs)
    assert issubclass(InvalidObservationError, ValueError)


def test_proprio_required_when_declared():
    the_spec = PolicySpec('p', load_action_space('arm7'), 4, uses_proprio=True)
    obs = Observation.make_example(the_spec)
    assert obs.proprio is not None and obs.proprio.shape == (7,)

    class P(Policy):
        spec = the_spec

        def predict_chunk(self, observation):
            return np.zeros(self.spec.chunk_shape, np.float32)

    P().validate_observation(obs)
    obs.proprio = None
    with pytest.raises(InvalidObservationError, match='proprio'):
        P().validate_observation(obs)


def test_make_example_from_size_and_spec_validation():
    obs = Observation.make_example((64, 48))
    assert obs.images['front'].shape == (48, 64, 3) and obs.instruction
    arm7 = load_action_space('arm7')
    spec = PolicySpec('p', arm7, 4, camera_names=['a', 'b'], image_size=[32, 16])
    assert spec.camera_names == ('a', 'b') and spec.image_size == (32, 16)
    assert spec.chunk_shape == (4, 7) and spec.chunk_duration == pytest.approx(0.4)
    assert set(Observation.make_example(spec).images) == {'a', 'b'}
    for bad in [dict(chunk_length=0), dict(image_mean=(0.5,) * 3),
                dict(control_period=0), dict(camera_names=())]:
        with pytest.raises(ValueError):
            PolicySpec('p', arm7, **{'chunk_length': 4, **bad})


def test_policy_is_abstract():
    with pytest.raises(TypeError):
        Policy()


# --- registry ---------------------------------------------------------------------------


def test_registry_builtin_and_unknown_name():
    assert 'scripted' in available_policies()
    assert policy_info('scripted').target == 'vla_ros.policies.scripted:ScriptedPolicy'
    p = make_policy('scripted', chunk_length=3, image_size=(64, 48))
    assert isinstance(p, ScriptedPolicy) and p.spec.chunk_shape == (3, 7)
    with pytest.raises(ValueError, match="unknown policy 'nope'; available: .*scripted"):
        make_policy('nope')


def test_registry_import_errors_become_policy_load_error():
    register_policy('_broken', 'vla_ros_no_such_module.x:Policy', family='broken')
    register_policy('_noattr', 'vla_ros.policies.scripted:Missing')
    try:
        with pytest.raises(PolicyLoadError, match='vla_ros_no_such_module.x'):
            make_policy('_broken')
        with pytest.raises(PolicyLoadError, match='Missing'):
            make_policy('_noattr')
        with pytest.raises(ValueError, match='already registered'):
            register_policy('_broken', 'a.b:C')
        with pytest.raises(ValueError, match='module:attribute'):
            register_policy('_bad', 'no_colon')
    finally:
        unregister_policy('_broken')
        unregister_policy('_noattr')


def test_registered_decorator_with_local_class():
    @registered('_local_scripted', family='test')
    class LocalPolicy(ScriptedPolicy):
        """A locally defined policy."""

    try:
        assert policy_info('_local_scripted').description == 'A locally defined policy.'
        assert isinstance(make_policy('_local_scripted'), LocalPolicy)
    finally:
        unregister_policy('_local_scripted')
    assert '_local_scripted' not in available_policies()


def test_make_scripted_does_not_import_torch():
    code = (
        'import sys\n'
        'from vla_ros.policies.registry import make_policy\n'
        'from vla_ros.policies.contract import Observation\n'
        'p = make_policy("scripted")\n'
        'p.predict_chunk(Observation.make_example(p.spec))\n'
        'heavy = [m for m in ("torch", "transformers", "rclpy") if m in sys.modules]\n'
        'assert not heavy, heavy\n'
    )
    subprocess.run([sys.executable, '-c', code], check=True, timeout=60)
