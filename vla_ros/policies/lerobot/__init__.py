"""LeRobot checkpoint FORMAT pieces shared by the LeRobot-format families (π₀/π₀.₅, SmolVLA).

:mod:`.processors`: the saved processor pipelines and their per-feature normalization;
:mod:`.weights`: memory-mapped safetensors reading and the strict-loading report.
Family specifics (networks, prompts, tokenization, key aliases, tied weights) stay in the
families' packages.
"""
