"""Declare a node's parameters from :mod:`vla_ros.parameters` (the only rclpy side of it)."""

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

from vla_ros import parameters as schema

_ROS_TYPES = {
    schema.BOOL: Parameter.Type.BOOL, schema.INT: Parameter.Type.INTEGER,
    schema.DOUBLE: Parameter.Type.DOUBLE, schema.STRING: Parameter.Type.STRING,
    schema.STRING_ARRAY: Parameter.Type.STRING_ARRAY,
    schema.DOUBLE_ARRAY: Parameter.Type.DOUBLE_ARRAY,
}


def descriptor(spec: schema.ParameterSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of ``spec``: description, read-only, range, choices."""
    out = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.range is not None:
        low, high = spec.range
        if spec.type == schema.INT:
            out.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            out.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    if spec.choices:
        out.additional_constraints = 'one of: ' + ', '.join(
            repr(c) for c in spec.allowed())
    return out


def declare_parameters(node, specs: dict) -> None:
    """Declare every spec on ``node`` (launch overrides apply as usual)."""
    for spec in specs.values():
        if spec.default is None:  # typed, without a value: "unset" means something
            node.declare_parameter(spec.name, _ROS_TYPES[spec.type], descriptor(spec))
        else:
            default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
            node.declare_parameter(spec.name, default, descriptor(spec))
