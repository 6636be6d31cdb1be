"""Control-period error, starvation, stamp-to-command overhead and RSS vs a sync loop.

``--real``: the same with real torch policies, policy process vs policy thread
(:mod:`vla_ros.benchmarking.pipeline_real`; its other options follow ``--real``).
"""

import sys

if __name__ == '__main__':
    if '--real' in sys.argv[1:]:
        from vla_ros.benchmarking.pipeline_real import main

        sys.exit(main([a for a in sys.argv[1:] if a != '--real']))
    from vla_ros.benchmarking.pipeline import main

    sys.exit(main())
