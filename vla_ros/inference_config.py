"""What the inference node's parameters mean, without ROS: one function per use.

The node and ``bag regress`` both turn a parameter dict (names of
:data:`vla_ros.parameters.INFERENCE_PARAMETERS`) into the policy's constructor arguments,
the engine configuration and the command clamp with these functions, so the two cannot
drift apart.
"""

from __future__ import annotations

import yaml

from vla_ros.actions.safety import SafetyLimits

# Changing any of these reloads the policy in the background.
POLICY_PARAMS = ('policy', 'policy_params', 'model_path', 'device', 'dtype', 'unnorm_key')
ENGINE_PARAMS = ('chunk_strategy', 'execute_steps', 'ensemble_coefficient',
                 'merge_new_weight', 'low_queue_depth', 'stale_image_timeout',
                 'inference_timeout', 'swap_behavior', 'chunk_timing', 'gripper_mode',
                 'gripper_close_threshold', 'gripper_open_threshold', 'gripper_min_dwell_s')


def parse_policy_params(text: str) -> dict:
    """Parse the ``policy_params`` parameter (a JSON or YAML mapping)."""
    if not text.strip():
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f'policy_params is not valid YAML/JSON: {exc}') from exc
    if not isinstance(value, dict):
        raise ValueError(f'policy_params must be a mapping, got {type(value).__name__}')
    return value


def policy_arguments(p: dict) -> tuple[str, dict]:
    """Registry name and constructor arguments of the policy ``p`` describes."""
    config = parse_policy_params(p['policy_params'])
    for key in ('model_path', 'unnorm_key'):
        if p.get(key):
            config[key] = p[key]
    if p.get('model_path'):
        config.setdefault('device', p['device'])
        config.setdefault('dtype', p['dtype'])
    return p['policy'], config


def engine_config(p: dict):
    """The :class:`~vla_ros.runtime.engine.EngineConfig` of ``p`` (validated)."""
    from vla_ros.actions.chunk_buffer import STRATEGIES
    from vla_ros.runtime.engine import EngineConfig

    strategy = STRATEGIES.get(p['chunk_strategy'])  # an unknown name: EngineConfig says so
    strategy_params = {keyword: p[name] for keyword, name in
                       getattr(strategy, 'node_parameters', {}).items()}
    return EngineConfig(
        control_rate_hz=p['control_rate_hz'], inference_rate_hz=p['inference_rate_hz'],
        low_queue_depth=p['low_queue_depth'], stale_image_timeout=p['stale_image_timeout'],
        inference_timeout=p['inference_timeout'], chunk_strategy=p['chunk_strategy'],
        strategy_params=strategy_params, swap_behavior=p['swap_behavior'],
        chunk_timing=p['chunk_timing'], gripper_mode=p['gripper_mode'],
        gripper_close_threshold=p['gripper_close_threshold'],
        gripper_open_threshold=p['gripper_open_threshold'],
        gripper_min_dwell_s=p['gripper_min_dwell_s'])


def command_limits(p: dict) -> SafetyLimits:
    """The clamp the node applies at the source; the driver applies the full limits again."""
    return SafetyLimits(max_linear_velocity=p['max_linear_velocity'],
                        max_angular_velocity=p['max_angular_velocity'],
                        max_base_linear_velocity=p['max_base_linear_velocity'],
                        max_base_angular_velocity=p['max_base_angular_velocity'])
