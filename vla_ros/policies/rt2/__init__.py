"""RT-2-style policy: a PaliGemma VLM that writes the action's bin indices as text.

Importing this package pulls in no torch; :mod:`.modeling` and the model build do.
"""

from vla_ros.policies.rt2.configuration import PRESETS, Rt2Config
from vla_ros.policies.rt2.grammar import ActionGrammar

__all__ = ['PRESETS', 'ActionGrammar', 'Rt2Config']
