"""LeRobot π₀ / π₀.₅ checkpoints (registry names ``pi0`` and ``pi05``).

Importing this package pulls in no torch; :mod:`.policy` and :mod:`.modeling` do.
"""
