"""Octo-style policy family: patch tokens + readouts + block-masked transformer + diffusion.

Only the configuration is imported here; the torch modules load when the policy is made
(``make_policy('octo')``), so importing this package stays cheap.
"""

from vla_ros.policies.octo.configuration import FULL, SAMPLERS, TINY, OctoConfig

__all__ = ['FULL', 'SAMPLERS', 'TINY', 'OctoConfig']
