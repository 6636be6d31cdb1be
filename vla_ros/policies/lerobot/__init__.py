"""LeRobot checkpoint FORMAT pieces shared by the LeRobot-format families (π₀/π₀.₅, SmolVLA).

:mod:`.processors`: the saved processor pipelines and their per-feature normalization;
:mod:`.weights`: safetensors header and memory-mapped tensor reading (the strict-loading
report is :mod:`vla_ros.policies.strict_loading`).
Family specifics (networks, prompts, tokenization, key aliases, tied weights) stay in the
families' packages.
"""
