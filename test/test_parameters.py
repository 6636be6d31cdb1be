"""The parameter schema: one value per default, typed conversion of launch strings."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vla_ros import parameters as schema
from vla_ros.parameters import (
    DRIVER,
    INFERENCE,
    ParameterValueError,
    convert,
    node_parameters,
    spec,
)

ROOT = Path(__file__).resolve().parents[1]


def test_schema_is_pure_and_reads_choices_without_torch():
    code = ('import sys; from vla_ros import parameters as s; '
            "names = s.spec('inference', 'policy').allowed(); "
            "assert 'scripted' in names and 'openvla' in names, names; "
            "assert s.spec('inference', 'dtype').allowed() == ('float32', 'bfloat16', "
            "'float16'); "
            "assert 'rclpy' not in sys.modules and 'torch' not in sys.modules; "
            "assert 'mujoco' not in sys.modules and 'vla_ros.drivers' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True)


# ------------------------------------------------------------------ one value per default
def test_safety_defaults_exist_once():
    from vla_ros.actions.safety import SafetyLimits

    limits = SafetyLimits()
    for name, value in schema.SAFETY_DEFAULTS.items():
        assert getattr(limits, name) == value, name
        assert tuple(spec(DRIVER, name).default) == value if isinstance(value, tuple) \
            else spec(DRIVER, name).default == value
    # the inference node's first clamp is the same parameter, same default, same range
    for name in ('max_linear_velocity', 'max_angular_velocity', 'max_base_linear_velocity',
                 'max_base_angular_velocity'):
        assert spec(INFERENCE, name).default == spec(DRIVER, name).default
        assert spec(INFERENCE, name).range == spec(DRIVER, name).range
    # the chosen values: the driver's, which the fault campaign and the soak audited
    assert schema.SAFETY_DEFAULTS['max_linear_acceleration'] == 2.0
    assert schema.SAFETY_DEFAULTS['max_angular_acceleration'] == 8.0


def test_defaults_are_in_range_and_typed():
    for node in (INFERENCE, DRIVER):
        for s in schema.node_parameters(node).values():
            if s.default is None:
                # unset means something: resolved at run time, or required by a joint
                # command_interface (the driver names the missing ones)
                assert s.name in ('enable_actuation', 'joint_position_min',
                                  'joint_position_max', 'joint_max_velocity'), s.name
                continue
            assert schema.check(s, s.default, strict_doubles=True) == (
                list(s.default) if isinstance(s.default, tuple) else s.default), s.name
            assert s.description and s.node == node


def test_shipped_parameter_files_only_hold_what_differs_from_the_schema():
    """Every default exists once: robot and policy files never restate one."""
    for path in sorted((ROOT / 'config').glob('*/*.yaml')):
        if path.parent.name == 'action_spaces':
            continue
        doc = yaml.safe_load(path.read_text())
        for section, body in doc.items():
            last = section.split('/')[-1]
            # '/**' sets parameters both nodes read (joint-space robots: command_interface).
            nodes = [INFERENCE, DRIVER] if last == '**' else \
                [{'vla_inference': INFERENCE, 'vla_driver': DRIVER}[last]]
            for name, value in (body['ros__parameters'] or {}).items():
                specs = [node_parameters(n)[name] for n in nodes if name in node_parameters(n)]
                if not specs:
                    spec(nodes[0], name)  # a typo raises, naming the known parameters
                for s in specs:
                    assert schema.check(s, value, strict_doubles=True) is not None
                    default = list(s.default) if isinstance(s.default, tuple) else s.default
                    assert value != default, f'{path.name} restates the default {name}: {value}'


def test_chunk_strategies_are_listed_once():
    from vla_ros.actions.chunk_buffer import STRATEGIES
    from vla_ros.inference_config import engine_config

    assert set(spec(INFERENCE, 'chunk_strategy').allowed()) == set(STRATEGIES)
    p = schema.defaults(INFERENCE)
    for name, cls in STRATEGIES.items():
        assert cls.node_parameters, name  # how the node configures it
        for parameter in cls.node_parameters.values():
            assert spec(INFERENCE, parameter).node == INFERENCE
            p[parameter] = spec(INFERENCE, parameter).default
        config = engine_config({**p, 'chunk_strategy': name})
        assert set(config.strategy_params) == set(cls.node_parameters)


def test_backend_parameters_are_a_separate_section():
    mujoco = schema.BACKENDS['mujoco']
    assert set(mujoco) == {'mobile', 'seed', 'image_width', 'image_height', 'task',
                           'task_seed', 'task_split'}
    assert all(s.backend == 'mujoco' for s in mujoco.values())
    assert set(schema.BACKENDS['dry_run']) == {'mobile'}
    assert not set(mujoco) & set(schema.DRIVER_PARAMETERS)
    assert set(schema.node_parameters(DRIVER, backends=())) == set(schema.DRIVER_PARAMETERS)
    assert set(schema.node_parameters(DRIVER)) >= set(mujoco)


def test_builtin_backends_take_their_parameters_from_the_schema():
    """A backend default exists once: the classes build their BackendParameters from it."""
    from vla_ros.drivers.backend import backend_parameters, resolve_backend

    for name, specs in schema.BACKENDS.items():
        declared = backend_parameters(resolve_backend(name))
        assert [p.name for p in declared] == list(specs), name
        for p in declared:
            s = specs[p.name]
            assert (p.default, p.description) == (s.default, s.description), p.name
            assert (p.minimum, p.maximum) == (s.range or (None, None)), p.name


def test_policy_arguments_are_one_function_shared_by_node_and_regression():
    from vla_ros.bags import regress
    from vla_ros.inference_config import policy_arguments

    assert regress.policy_arguments is policy_arguments
    p = {**schema.defaults(INFERENCE), 'policy': 'openvla', 'model_path': '/m',
         'policy_params': '{"instruction_set": "checkpoint"}'}
    assert policy_arguments(p) == ('openvla', {'instruction_set': 'checkpoint',
                                               'model_path': '/m', 'device': 'cpu',
                                               'dtype': 'float32'})
    assert policy_arguments(schema.defaults(INFERENCE)) == ('scripted', {})
    source = (ROOT / 'vla_ros' / 'nodes' / 'inference_node.py').read_text()
    assert 'policy_arguments(p)' in source and "config.setdefault('device'" not in source


# ------------------------------------------------------------------ conversion
@pytest.mark.parametrize('node, name, text, expected', [
    (INFERENCE, 'inference_rate_hz', '0', 0.0),        # a DOUBLE, whatever it looks like
    (INFERENCE, 'control_rate_hz', '20', 20.0),
    (INFERENCE, 'ensemble_coefficient', '1e-3', 0.001),
    (INFERENCE, 'execute_steps', ' 8 ', 8),
    (INFERENCE, 'use_joint_states', 'True', True),
    (INFERENCE, 'use_joint_states', 'false', False),
    (INFERENCE, 'model_path', '123', '123'),             # strings stay strings
    (INFERENCE, 'device', 'true', 'true'),
    (INFERENCE, 'policy_params', '{"a": 1}', '{"a": 1}'),
    (INFERENCE, 'cameras', '[front, wrist]', ['front', 'wrist']),
    (INFERENCE, 'cameras', 'front', ['front']),
    (INFERENCE, 'cameras', '[1, wrist]', ['1', 'wrist']),
    (DRIVER, 'workspace_min', '[0, -0.5, 0.01]', [0.0, -0.5, 0.01]),
    (DRIVER, 'enable_actuation', 'TRUE', True),
    (DRIVER, 'task_seed', '5009', 5009),
    (DRIVER, 'task', 'pick_up', 'pick_up'),
    (INFERENCE, 'chunk_strategy', 'latency_aware', 'latency_aware'),
    (INFERENCE, 'policy', 'octo', 'octo'),
])
def test_launch_strings_are_converted_to_the_declared_type(node, name, text, expected):
    value = convert(spec(node, name), text)
    assert value == expected and type(value) is type(expected)
    if isinstance(value, list):
        assert all(type(v) is type(expected[0]) for v in value)


@pytest.mark.parametrize('node, name, text, message', [
    (INFERENCE, 'control_rate_hz', 'abc', "control_rate_hz:='abc' is not a number"),
    (INFERENCE, 'control_rate_hz', '', 'is not a number'),
    (INFERENCE, 'control_rate_hz', 'nan', 'is not finite'),
    (INFERENCE, 'control_rate_hz', 'inf', 'is not finite'),
    (INFERENCE, 'control_rate_hz', '0', r'outside \[1.0, 200.0\]'),
    (INFERENCE, 'inference_rate_hz', '-1', 'outside'),
    (INFERENCE, 'execute_steps', '1.5', 'is not an integer'),
    (INFERENCE, 'execute_steps', '0', 'outside'),
    (INFERENCE, 'use_joint_states', 'yes', 'is not true or false'),
    (INFERENCE, 'cameras', '[]', 'non-empty list'),
    (DRIVER, 'workspace_max', '[0.8, x, 0.6]', "'x' is not a number"),
    (INFERENCE, 'chunk_strategy', 'greedy', "not one of 'latency_aware', 'receding_horizon'"),
    (INFERENCE, 'policy', 'nosuch', "'nosuch' is not one of .*'octo'.*'scripted'"),
    (INFERENCE, 'dtype', 'float64', 'not one of'),
    (INFERENCE, 'image_transport', 'jpeg', 'not one of'),
    (DRIVER, 'task', 'fly', 'not one of'),
    (DRIVER, 'task_split', 'val', 'not one of'),
])
def test_bad_launch_strings_are_rejected_clearly(node, name, text, message):
    with pytest.raises(ParameterValueError, match=message):
        convert(spec(node, name), text)


def test_rejections_name_the_parameter_and_its_meaning():
    with pytest.raises(ValueError) as info:
        convert(spec(INFERENCE, 'control_rate_hz'), 'abc')
    assert 'double parameter of vla_inference: command publishing rate' in str(info.value)
    with pytest.raises(ValueError, match='did you mean max_linear_velocity'):
        spec(DRIVER, 'max_linear_velocty')


def test_parameter_file_values_must_have_the_declared_type():
    s = spec(DRIVER, 'max_linear_velocity')
    assert schema.check(s, 0.1, strict_doubles=True) == 0.1
    with pytest.raises(ParameterValueError, match='decimal point'):
        schema.check(s, 1, strict_doubles=True)  # rclpy would refuse INTEGER for DOUBLE
    assert schema.check(s, 1) == 1.0 and type(schema.check(s, 1)) is float
    with pytest.raises(ParameterValueError, match='decimal point'):
        schema.check(spec(DRIVER, 'workspace_min'), [0, 0.0, 0.1], strict_doubles=True)
    with pytest.raises(ParameterValueError, match='not an integer'):
        schema.check(spec(INFERENCE, 'execute_steps'), True)
    with pytest.raises(ParameterValueError, match='not a string'):
        schema.check(spec(INFERENCE, 'model_path'), 5)
    with pytest.raises(ParameterValueError, match='not a list of strings'):
        schema.check(spec(INFERENCE, 'cameras'), [1, 2])


# ------------------------------------------------------------------ nodes declare from it
def _declared(node) -> dict:
    from rclpy.exceptions import ParameterUninitializedException

    out = {}
    for name in node._parameters:
        if name in ('use_sim_time', 'start_type_description_service'):  # rclpy's own
            continue
        d = node.describe_parameter(name)
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:  # declared typed, without a value
            value = None
        ranges = [(r.from_value, r.to_value) for r in
                  (list(d.floating_point_range) + list(d.integer_range))]
        out[name] = (list(value) if isinstance(value, (list, tuple)) or
                     hasattr(value, 'tolist') else value, d.read_only, ranges, d.description)
    return out


def _expected(node_key, overrides=None, backends=()) -> dict:
    out = {}
    for name, s in schema.node_parameters(node_key, backends).items():
        value = (overrides or {}).get(name, s.default)
        value = list(value) if isinstance(value, tuple) else value
        ranges = [tuple(map(type(s.range[0]), s.range))] if s.range else []
        out[name] = (value, s.read_only, ranges, s.description)
    return out


def test_both_nodes_declare_exactly_the_schema(ros_context):
    from rclpy.parameter import Parameter

    from vla_ros.nodes.driver_node import DriverNode
    from vla_ros.nodes.inference_node import InferenceNode

    inference = InferenceNode(context=ros_context)
    try:
        declared = _declared(inference)
        assert declared == _expected(INFERENCE)
        descriptor = inference.describe_parameter('chunk_strategy')
        assert 'receding_horizon' in descriptor.additional_constraints
    finally:
        inference.destroy_node()
    # The driver declares its own parameters and those of the selected backend only
    # (a plugin backend's own: test_backend_plugins.py).
    for backend in ('dry_run', 'mujoco'):
        driver = DriverNode(context=ros_context, parameter_overrides=[
            Parameter('backend', value=backend), Parameter('camera_rate_hz', value=0.0)])
        try:
            declared = _declared(driver)
            # enable_actuation: unset resolves to True for the simulated backends
            expected = _expected(DRIVER, {'backend': backend, 'camera_rate_hz': 0.0,
                                          'enable_actuation': True}, backends=(backend,))
            assert declared == expected, backend
            assert math.isclose(driver.describe_parameter('max_angular_velocity')
                                .floating_point_range[0].to_value, 2 * math.pi)
        finally:
            driver.destroy_node()


def test_integer_launch_value_for_a_double_reaches_the_node_as_a_double(ros_context):
    """Issue 18 item 5: inference_rate_hz:=0 crashed the node (INTEGER for a DOUBLE)."""
    import rclpy

    from vla_ros import bringup
    from vla_ros.nodes.inference_node import InferenceNode

    _, spec_ = bringup.nodes('sim_arm', {'inference_rate_hz': '0', 'control_rate_hz': '20'})
    args = bringup.ros_args(spec_)
    assert 'inference_rate_hz:=0.0' in args and 'control_rate_hz:=20.0' in args
    context = rclpy.Context()
    rclpy.init(args=['inference_node', *args], context=context,
               domain_id=int(os.environ['ROS_DOMAIN_ID']))
    try:
        node = InferenceNode(context=context)
        assert node.get_parameter('inference_rate_hz').value == 0.0
        assert node.get_parameter('control_rate_hz').value == 20.0
        assert json.loads(node.get_parameter('policy_params').value)['pattern'] == 'constant'
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_worked_example_a_new_chunk_strategy(monkeypatch, ros_context):
    """Adding a strategy: its class in chunk_buffer.py and its knob in parameters.py."""
    from rclpy.parameter import Parameter

    from vla_ros import bringup
    from vla_ros.actions import chunk_buffer
    from vla_ros.inference_config import engine_config
    from vla_ros.nodes.inference_node import InferenceNode
    from vla_ros.runtime.engine import InferenceEngine

    class ShortHorizon(chunk_buffer.RecedingHorizon):
        """Receding horizon with its own step count (the example's new strategy)."""

        name = 'short_horizon'
        node_parameters = {'execute_steps': 'short_horizon_steps'}

    # the two edits: chunk_buffer.STRATEGIES and parameters.INFERENCE_PARAMETERS
    monkeypatch.setitem(chunk_buffer.STRATEGIES, ShortHorizon.name, ShortHorizon)
    monkeypatch.setitem(schema.INFERENCE_PARAMETERS, 'short_horizon_steps',
                        schema.ParameterSpec('short_horizon_steps', schema.INT, 2,
                                             'short horizon: actions executed per chunk',
                                             INFERENCE, range=(1, 8)))
    # launch conversion, validation and --help follow
    _, inference = bringup.nodes('sim_arm', {'chunk_strategy': 'short_horizon'})
    assert inference.parameters['chunk_strategy'] == 'short_horizon'
    assert 'short_horizon' in bringup.help_text()
    # the engine builds it with the knob's value (the node and bag regress use this)
    p = {**schema.defaults(INFERENCE), 'chunk_strategy': 'short_horizon'}
    assert engine_config(p).strategy_params == {'execute_steps': 2}
    InferenceEngine(engine_config(p))
    # the node declares the knob and accepts the strategy at run time
    node = InferenceNode(context=ros_context)
    try:
        assert node.get_parameter('short_horizon_steps').value == 2
        result = node.set_parameters([Parameter('chunk_strategy', value='short_horizon'),
                                      Parameter('short_horizon_steps', value=3)])
        assert all(r.successful for r in result), result
        refused = node.set_parameters([Parameter('short_horizon_steps', value=9)])[0]
        assert not refused.successful  # the range comes from the schema
    finally:
        node.destroy_node()


def test_engine_config_defaults_match_the_schema():
    """EngineConfig (runtime/engine.py) keeps dataclass defaults for library use; same values."""
    import dataclasses

    from vla_ros.runtime.engine import EngineConfig

    fields = {f.name: f.default for f in dataclasses.fields(EngineConfig)
              if f.default is not dataclasses.MISSING}
    for name in ('control_rate_hz', 'inference_rate_hz', 'low_queue_depth',
                 'stale_image_timeout', 'inference_timeout', 'chunk_strategy',
                 'swap_behavior', 'chunk_timing', 'gripper_mode', 'gripper_close_threshold',
                 'gripper_open_threshold', 'gripper_min_dwell_s'):
        assert fields[name] == spec(INFERENCE, name).default, name


def test_gripper_parameters_reach_the_engine():
    """The node's gripper_* parameters configure the engine's gripper filter."""
    from vla_ros.inference_config import engine_config

    p = {**schema.defaults(INFERENCE), 'gripper_mode': 'binary',
         'gripper_close_threshold': 0.2, 'gripper_open_threshold': 0.8,
         'gripper_min_dwell_s': 0.25}
    config = engine_config(p).gripper_filter_config
    assert (config.mode, config.close_threshold, config.open_threshold,
            config.min_dwell_s) == ('binary', 0.2, 0.8, 0.25)
    with pytest.raises(ValueError, match='close_threshold < open_threshold'):
        engine_config({**p, 'gripper_close_threshold': 0.9})
