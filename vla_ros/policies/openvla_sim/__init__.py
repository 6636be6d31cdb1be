"""OpenVLA's simulation variant: the shipped ``vla_ros/models/openvla_sim`` and its lineage.

OpenVLA (:mod:`vla_ros.policies.openvla`) grown by what a small model trained from scratch
on the simulated arm needed: keypoint, instruction-conditioned target and pixel-resolution
target tokens per camera, 2-D sine-cosine position init, HL-Gauss action targets, and
training-only probes and losses on the simulator's ground truth (targets computed by the
training plugin :mod:`vla_ros.training.auxiliary`, only for this variant).

Modules: ``configuration`` (config, legacy checkpoints, the training-stage presets),
``modeling`` (readouts, probes, the model) and ``policy`` (the Policy; registry entry
``openvla_sim``). ``policy:=openvla`` selects it from a checkpoint's config.json, and
``--size sim_base|sim|sim_pixel`` from its presets. Importing this package imports
nothing heavy.
"""
