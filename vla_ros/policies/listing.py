"""The policy table: what every registered policy is, built for real at its tiny size.

Used by ``vla-ros policies --json`` and the latency benchmark. Each family describes its
action head with the contract's ``action_head`` (e.g. ``'256-way softmax x11'``,
``'text tokens'``, ``'diffusion'``, ``'flow matching'``) and ``action_type``
(``'discrete'`` or ``'continuous'``); :data:`FALLBACK_HEADS` covers families that leave
them empty.
"""

from typing import Any

from vla_ros.policies.registry import available_policies, make_policy, policy_info

# Used only when a family class lacks action_head / action_type: (head, type).
# '{dim}' is replaced by the action dimension.
FALLBACK_HEADS = {
    'rt1': ('256-way softmax x{dim}', 'discrete'),
    'openvla': ('text tokens', 'discrete'),
    'rt2': ('text tokens', 'discrete'),
    'octo': ('diffusion', 'continuous'),
    'pi0_style': ('flow matching', 'continuous'),
}
NO_MODEL = ('scripted (no model)', 'continuous')


def describe_head(policy, family: str) -> tuple[str, str]:
    """``(action_head, action_type)`` of a built policy (declared, else the fallback)."""
    if policy.model is None:
        head, kind = NO_MODEL
    else:
        head, kind = FALLBACK_HEADS.get(family, ('unknown', 'unknown'))
    head = policy.action_head or head
    kind = policy.action_type or kind
    return head.format(dim=policy.spec.action_space.dim), kind


def full_parameter_count(policy) -> int | None:
    """Parameters of the family's 'full' preset on the meta device (None without one)."""
    from vla_ros.policies.torch_policy import TorchPolicy

    cls = type(policy)
    if not issubclass(cls, TorchPolicy) or 'full' not in cls.presets:
        return None
    return int(cls.count_parameters('full'))


def policy_row(name: str, include_full: bool = True, policy=None) -> dict[str, Any]:
    """One row of the table; the tiny policy is built (and closed) to measure it.

    ``policy`` may be an already built default (tiny) instance of ``name`` to measure
    instead; it is left open.
    """
    info = policy_info(name)
    row: dict[str, Any] = {'name': name, 'family': info.family,
                           'description': info.description}
    owned = policy is None
    policy = make_policy(name) if owned else policy
    try:
        spec = policy.spec
        head, kind = describe_head(policy, info.family)
        model = policy.model
        row.update({
            'action_head': head,
            'action_type': kind,
            'action_space': spec.action_space.name,
            'action_dim': spec.action_space.dim,
            'chunk_length': spec.chunk_length,
            'control_period': spec.control_period,
            'image_size': list(spec.image_size),
            'cameras': list(spec.camera_names),
            'tiny_parameters': (None if model is None
                                else sum(p.numel() for p in model.parameters())),
            'full_parameters': full_parameter_count(policy) if include_full else None,
        })
    finally:
        if owned:
            policy.close()
    return row


def policy_table(include_full: bool = True) -> list[dict[str, Any]]:
    """A row per registered policy, sorted by name (see :func:`policy_row`).

    A policy that cannot be built (e.g. a missing optional dependency) still gets a row,
    with its ``error`` instead of the measured fields, so one broken family does not hide
    the others.
    """
    rows = []
    for name in available_policies():
        try:
            rows.append(policy_row(name, include_full))
        except Exception as exc:  # reported in the row, not swallowed
            info = policy_info(name)
            rows.append({'name': name, 'family': info.family, 'description': info.description,
                         'error': f'{type(exc).__name__}: {exc}'})
    return rows


def _millions(n: int | None) -> str:
    return '-' if n is None else f'{n / 1e6:.2f}M' if n >= 1e5 else str(n)


def format_policy_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text rendering of :func:`policy_table` rows (one line per policy)."""
    name_w = max([4] + [len(r['name']) for r in rows])
    family_w = max([6] + [len(r['family']) for r in rows])
    head_w = max([11] + [len(r.get('action_head', '')) for r in rows])
    lines = [f'{"name":{name_w}s} {"family":{family_w}s} {"action head":{head_w}s} '
             f'{"type":10s} {"chunk":>5s} {"period":>6s} {"tiny":>8s} {"full":>9s}']
    for r in rows:
        start = f'{r["name"]:{name_w}s} {r["family"]:{family_w}s} '
        if 'error' in r:
            lines.append(f'{start}unavailable: {r["error"]}')
            continue
        lines.append(f'{start}{r["action_head"]:{head_w}s} {r["action_type"]:10s} '
                     f'{r["chunk_length"]:5d} {r["control_period"]:6.3f} '
                     f'{_millions(r["tiny_parameters"]):>8s} '
                     f'{_millions(r["full_parameters"]):>9s}')
    return '\n'.join(lines)
