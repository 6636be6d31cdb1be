"""Pure logic of ``vla-ros policy``: the parameters a swap sets and how it ended.

A swap sets ``policy``, ``model_path``, ``policy_params`` and ``unnorm_key`` in one
atomic parameter change, so the new family never starts with the previous family's
checkpoint or constructor arguments: an option left out means the new family's own
default (what ``make_policy(name)`` builds). The load then happens in the background;
:class:`SwapWatch` reads the inference node's PolicyStatus messages to tell when it
finished and whether it succeeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

# PolicyStatus.STATE_* (vla_ros_msgs), repeated so this module needs no ROS import.
LOADING, READY, RUNNING, HOLDING, ERROR, DONE = range(6)
STATE_NAMES = {LOADING: 'loading', READY: 'ready', RUNNING: 'running', HOLDING: 'holding',
               ERROR: 'error', DONE: 'done'}


def swap_parameters(name: str, model_path: str = '', params: str = '',
                    unnorm_key: str = '') -> dict[str, str]:
    """The parameter values a swap to ``name`` sets together.

    ``params`` is a JSON (or YAML) mapping of constructor arguments; it is checked
    here so a typo is refused before the running policy is touched.
    """
    if not name.strip():
        raise ValueError('the policy name is empty')
    parsed = {}
    if params.strip():
        try:
            parsed = yaml.safe_load(params)
        except yaml.YAMLError as exc:
            raise ValueError(f'--params is not valid JSON: {exc}') from exc
        if not isinstance(parsed, dict):
            raise ValueError(f'--params must be a JSON object like \'{{"key": 1}}\', '
                             f'got {type(parsed).__name__}')
    return {'policy': name, 'model_path': model_path, 'policy_params': json.dumps(parsed),
            'unnorm_key': unnorm_key}


@dataclass(frozen=True)
class SwapOutcome:
    """How a swap ended: loaded (``ok``) or not, with the node's words."""

    ok: bool
    state: str
    message: str


class SwapWatch:
    """Follow PolicyStatus messages after the node accepted a swap to ``name``.

    The node marks the load as begun before it answers the parameter request, so a
    status published after the answer shows the load in progress or its result. A
    status published just before the answer can still arrive just after it (two
    different DDS writers); such a stale message is only trusted once the load was
    seen in progress, or ``grace`` seconds after the answer.
    """

    def __init__(self, name: str, accepted_at: float, grace: float = 0.5):
        """Watch a swap to ``name`` that the node accepted at ``accepted_at`` (s)."""
        self.name = name
        self.accepted_at = accepted_at
        self.grace = grace
        self.seen_loading = False

    def observe(self, policy: str, state: int, message: str, now: float
                ) -> SwapOutcome | None:
        """The outcome this status shows, or None while it is still open."""
        quoted = repr(self.name)
        if (state == LOADING and f'loading policy {quoted}' in message) \
                or f'(loading {quoted} in the background)' in message:
            self.seen_loading = True
            return None
        if not self.seen_loading and now - self.accepted_at < self.grace:
            return None
        state_name = STATE_NAMES.get(state, str(state))
        if f'failed to load policy {quoted}' in message:
            return SwapOutcome(False, state_name, message)
        if policy != self.name:
            return None
        if state == ERROR:
            return SwapOutcome(False, state_name, message)
        if state in (READY, RUNNING, HOLDING, DONE):
            return SwapOutcome(True, state_name, message)
        return None
