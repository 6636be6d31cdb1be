"""rosbag2 recording, inspection, replay, lock-step regression and dataset export.

Bags are real rosbag2 bags (sqlite3 or mcap storage, metadata versions 4 to 9) written and
read with the pure-Python ``rosbags`` library, so no ROS 2 C++ tooling is needed:

- :mod:`vla_ros.bags.typestore`  message definitions: Kilted types, ours, installed, bag's
- :mod:`vla_ros.bags.metadata`   ``metadata.yaml`` parsing and writing per version
- :mod:`vla_ros.bags.reader`     tolerant reading (split, compressed, truncated, corrupt)
- :mod:`vla_ros.bags.writer`     split files, periodic flush for crash safety
- :mod:`vla_ros.bags.reindex`    in-place repair after a killed recording
- :mod:`vla_ros.bags.qos`        recording / replay QoS from the offered profiles
- :mod:`vla_ros.bags.recorder`   rclpy recorder (raw subscriptions, writer thread)
- :mod:`vla_ros.bags.player`     rclpy player (timing, rate, remap, loop, offset)
- :mod:`vla_ros.bags.info`       what a bag holds
- :mod:`vla_ros.bags.session`    a recorded VLA session decoded on one timeline
- :mod:`vla_ros.bags.regress`    lock-step replay through the inference engine
- :mod:`vla_ros.bags.report`     regression report and plot
- :mod:`vla_ros.bags.dataset`    recorded sessions -> training episodes
- :mod:`vla_ros.bags.golden`     golden bags recorded from the simulated robot
- :mod:`vla_ros.bags.cli`        ``vla-ros bag ...``
"""
