"""What ``vla-ros status`` says when no PolicyStatus arrived (pure; tested without ROS)."""

from __future__ import annotations

from collections.abc import Mapping


def discovery_settings(env: Mapping[str, str]) -> str:
    """The environment that decides which ROS graph this process sees."""
    domain = env.get('ROS_DOMAIN_ID', '')
    scope = env.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '')
    return (f"ROS_DOMAIN_ID={domain if domain else 'unset (0)'}, "
            f"ROS_AUTOMATIC_DISCOVERY_RANGE={scope if scope else 'unset (SUBNET)'}")


def no_status_message(topic: str, publishers: int, waited_s: float,
                      elsewhere: list[str], env: Mapping[str, str]) -> str:
    """Why nothing was received on ``topic`` and what to check.

    ``publishers``: publishers of ``topic`` discovered; ``elsewhere``: other
    ``.../vla/status`` topics seen in the graph (inference nodes in other namespaces).
    """
    settings = discovery_settings(env)
    if publishers:
        return (f'vla-ros status: {topic} has {publishers} publisher(s) but no status '
                f'arrived within {waited_s:.1f} s (the node may be starting or stalled; '
                f'{settings})')
    lines = [f'vla-ros status: no inference node found: nothing publishes {topic} '
             f'(listened {waited_s:.1f} s with {settings}).']
    if elsewhere:
        namespaces = [t[:-len('/vla/status')] or '/' for t in elsewhere]
        lines.append('  Inference nodes run in other namespaces: '
                     + ', '.join(f'{ns} (--namespace {ns.strip("/")})' for ns in namespaces))
    else:
        lines.append('  Is a configuration running (e.g. vla-ros launch sim_arm)? It must '
                     'use the same ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE as this '
                     'shell, and its namespace must match --namespace.')
    return '\n'.join(lines)
