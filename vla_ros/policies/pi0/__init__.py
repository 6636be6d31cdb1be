"""pi0-style policy: PaliGemma-style VLM prefix + flow-matching action expert.

Importing this package pulls in no torch; :mod:`.modeling` and the model build do.
"""

from vla_ros.policies.pi0.configuration import PRESETS, Pi0Config

__all__ = ['PRESETS', 'Pi0Config']
