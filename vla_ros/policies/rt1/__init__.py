"""RT-1 policy family: FiLM-EfficientNet + TokenLearner + Transformer, 256-bin heads.

Import :mod:`vla_ros.policies.rt1.policy` (it needs torch); this package module stays
light so that the registry can list the family without importing torch.
"""
