"""Small stand-alone peers for fault runs: an instruction publisher that can be killed.

``python -m vla_ros.reliability.peers instruction "move in circles" [--namespace NS]``
publishes the instruction on the latched topic and keeps the publisher alive until it is
stopped (SIGINT/SIGTERM) or killed, like an operator console or a task planner would.
"""

import argparse
import sys


def main(argv=None) -> int:
    """Run the peer named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='peer', required=True)
    p = sub.add_parser('instruction', help='publish an instruction and stay alive')
    p.add_argument('text')
    p.add_argument('--namespace', default='')
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from std_msgs.msg import String

    from vla_ros.nodes import qos

    rclpy.init()
    node = rclpy.create_node('vla_instruction_peer', namespace=args.namespace or None)
    try:
        pub = node.create_publisher(String, 'instruction', qos.INSTRUCTION)
        pub.publish(String(data=args.text))
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
