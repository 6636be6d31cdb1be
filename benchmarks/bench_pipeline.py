"""Control-period error, starvation, stamp-to-command overhead and RSS vs a sync loop."""

import sys

from vla_ros.benchmarking.pipeline import main

if __name__ == '__main__':
    sys.exit(main())
