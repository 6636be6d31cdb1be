"""OpenVLA family: Prismatic DINOv2 + SigLIP -> MLP -> Llama-2 with 256-bin action tokens.

Modules: ``configuration_openvla`` (config + presets), ``modeling_openvla`` (the model),
``processing_openvla`` (prompts), ``decoding`` (constrained greedy decoder), ``remote``
(gated custom-code checkpoints) and ``policy`` (the Policy; registry entry ``policy:load``).
Importing this package imports nothing heavy; the modules import torch/transformers.
"""
