"""A two-camera test policy whose chunk depends on every pixel it is given.

Loaded by the policy process from its target ``pixel_policy:PixelPolicy`` (this folder
on its PYTHONPATH), so a test
can tell which images (and which preprocessing) the process used.
"""

import numpy as np

from vla_ros.policies.scripted import ScriptedPolicy


class PixelPolicy(ScriptedPolicy):
    """The scripted chunk, its first two velocities set from each camera's image."""

    def __init__(self, **kwargs):
        super().__init__(**{'camera_names': ('front', 'wrist'), 'image_size': (32, 24),
                            **kwargs})

    def predict_chunk(self, observation):
        """x: the front image's weighted pixel sum, y: the wrist image's (both scaled)."""
        chunk = self.expected_chunk(observation.instruction, observation.stamp).copy()
        for column, cam in enumerate(('front', 'wrist')):
            image = np.asarray(observation.images[cam], np.float64)
            weights = np.arange(image.size, dtype=np.float64).reshape(image.shape)
            chunk[:, column] = 0.01 * float((image * weights).sum()) / (255.0 * weights.sum())
        return chunk
