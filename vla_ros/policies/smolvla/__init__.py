"""SmolVLA (LeRobot): SmolVLM2 prefix + flow-matching action expert.

Registered as ``smolvla`` (``vla_ros.policies.smolvla.policy:load``); torch and
transformers are imported only when a policy is made.
"""
