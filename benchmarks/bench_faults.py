"""Fuzz, fault and soak campaign: unsafe commands, stop latencies, RSS, message counts.

Default: 100 cases per fuzz target, 3 rounds of in-process faults, 1 round of process
kills/restarts, a 2-minute soak. The full soak: ``--soak-minutes 10``.
"""

import sys

from vla_ros.reliability.cli import main

if __name__ == '__main__':
    sys.exit(main())
