"""OpenVLA family: Prismatic DINOv2 + SigLIP -> MLP -> Llama-2 with 256-bin action tokens.

Modules: ``configuration_openvla`` (config + presets), ``modeling_openvla`` (the model),
``processing_openvla`` (prompts), ``decoding`` (constrained greedy decoder), ``remote``
(gated custom-code checkpoints) and ``policy`` (the Policy; registry entry ``policy:load``).
Released ``openvla/openvla-7b``-layout directories: ``released_format`` (config.json),
``weight_mapping`` (tensor names and layouts), ``safetensors_io`` (shards, streamed reads),
``released_loader`` (strict meta-device loading) and ``released_writer`` (the reverse); the
released processor's resizing is the core's ``vla_ros.images`` (``PolicySpec.image_resize``).
Importing this package imports nothing heavy; the modules import torch/transformers.
"""
