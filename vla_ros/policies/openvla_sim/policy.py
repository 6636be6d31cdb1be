"""The simulation variant's policy: OpenVLA's, with the variant's model and training data.

Registry entry ``openvla_sim`` (:func:`load`); ``policy:=openvla`` reaches it too, from a
checkpoint whose config.json it claims or from one of its presets (``sim_base``, ``sim``,
``sim_pixel``). Inference is OpenVLA's; training adds the simulator's ground truth to each
batch (:func:`vla_ros.training.auxiliary.simulator_targets`) for the configured losses.
"""

import torch

from vla_ros.policies.openvla.policy import OpenVlaPolicy
from vla_ros.policies.openvla_sim.configuration import (
    PRESETS,
    SIM_MODEL_TYPE,
    OpenVlaSimConfig,
    config_from_checkpoint,
    is_legacy_variant,
)
from vla_ros.policies.openvla_sim.modeling import OpenVlaSimForActionPrediction


class OpenVlaSimPolicy(OpenVlaPolicy):
    """OpenVLA with readout tokens per camera and training-only simulator-truth losses."""

    config_class = OpenVlaSimConfig
    model_class = OpenVlaSimForActionPrediction
    presets = PRESETS

    @classmethod
    def claims(cls, config: dict) -> bool:
        """Its own model type, or an older ``openvla`` checkpoint that used its options."""
        return config.get('model_type') == SIM_MODEL_TYPE or is_legacy_variant(config)

    @classmethod
    def checkpoint_config(cls, config: dict) -> OpenVlaSimConfig:
        """The checkpoint's configuration, read the same whichever model type it was saved as."""
        return config_from_checkpoint(config)

    def collate(self, samples: list[dict]) -> dict:
        """OpenVLA's batch plus the simulator targets the configured losses need."""
        from vla_ros.training.auxiliary import simulator_targets
        from vla_ros.training.data import default_collate

        batch = default_collate(self, samples)
        config = self.config
        if not config.uses_simulator_targets:
            return batch
        cameras = self.spec.camera_names if config.pixel_keypoint_weight > 0 else ()
        targets = simulator_targets(samples, cameras, self.spec.image_size)
        batch.update({key: torch.as_tensor(value) for key, value in targets.items()})
        return batch

    def auxiliary_inputs(self, batch: dict) -> dict:
        """The batch's simulator targets that the configured losses use (the rest is unused)."""
        config = self.config
        inputs = {}
        probes = any(getattr(config, f'{n}_probe_weight') > 0
                     for n in ('object', 'target', 'state', 'pixel'))
        if probes and batch.get('object_targets') is not None:
            inputs = {'object_targets': torch.as_tensor(batch['object_targets']),
                      'object_valid': torch.as_tensor(batch['object_valid'], dtype=torch.bool)}
            if batch.get('target_index') is not None:
                inputs['target_index'] = torch.as_tensor(batch['target_index'])
        if config.pixel_keypoint_weight > 0 and batch.get('target_pixel') is not None:
            inputs['target_pixel'] = torch.as_tensor(batch['target_pixel'])
            inputs['target_pixel_valid'] = torch.as_tensor(batch['target_pixel_valid'],
                                                           dtype=torch.bool)
        return inputs


def load(model_path: str = '', size: str = 'tiny', **kwargs):
    """Registry entry point (``make_policy('openvla_sim', ...)``); see OpenVlaPolicy.load."""
    return OpenVlaSimPolicy.load(model_path=model_path, size=size, **kwargs)
