"""Start a bringup configuration as plain processes (``vla-ros launch``, pip-only machines).

Does what ``ros2 launch`` does for our launch files: one process per node with the same
``--ros-args`` (name, namespace, parameter files, overrides), Ctrl-C forwarded, and a
clean stop (SIGINT, then SIGTERM, then SIGKILL after timeouts). The nodes get the
large-image Fast DDS profile unless the user chose one (:mod:`vla_ros.dds`).
"""

import os
import shlex
import signal
import subprocess
import sys
import time

from vla_ros import bringup
from vla_ros.dds import apply_default_profile


class ProcessLauncher:
    """Run the nodes of one configuration as child processes."""

    def __init__(self, configuration: str, arguments: dict[str, str], env=None,
                 stdout=None, stderr=None):
        """Resolve and validate the nodes now so a bad argument fails before anything starts."""
        self.arguments = bringup.resolve_arguments(configuration, arguments)
        self.specs = bringup.nodes(configuration, arguments)
        self.env = dict(os.environ if env is None else env)
        apply_default_profile(self.env)
        self.stdout, self.stderr = stdout, stderr
        self.processes: list[tuple[bringup.NodeSpec, subprocess.Popen]] = []

    def commands(self) -> list[list[str]]:
        """The command line of every node (for logs and dry runs)."""
        namespace = self.arguments['namespace']
        return [[sys.executable, '-m', spec.module, *bringup.ros_args(spec, namespace)]
                for spec in self.specs]

    def shell_lines(self) -> list[str]:
        """The commands as lines a POSIX shell gives back unchanged (``--print``)."""
        return [shlex.join(command) for command in self.commands()]

    def start(self) -> None:
        """Start every node."""
        for spec, command in zip(self.specs, self.commands(), strict=True):
            # Own process group: a terminal's Ctrl-C reaches us once, and we forward it.
            proc = subprocess.Popen(command, env=self.env, stdout=self.stdout,
                                    stderr=self.stderr, start_new_session=True)
            self.processes.append((spec, proc))

    def poll(self) -> list[tuple[str, int]]:
        """Nodes that have exited, with their return codes."""
        return [(spec.name, proc.returncode) for spec, proc in self.processes
                if proc.poll() is not None]

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """Stop every node: SIGINT (clean shutdown), then SIGTERM, then SIGKILL."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0),
                          (signal.SIGKILL, 3.0)):
            alive = [(s, p) for s, p in self.processes if p.poll() is None]
            if not alive:
                break
            for _, proc in alive:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.poll() is None for _, p in alive):
                time.sleep(0.05)
        return {spec.name: proc.returncode for spec, proc in self.processes}

    def run_until_interrupted(self) -> int:
        """Start, wait for Ctrl-C/SIGTERM or a node exiting, stop all; exit code."""
        stop_requested = []

        def request_stop(signum, _frame):
            stop_requested.append(signum)

        old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not stop_requested:
                exited = self.poll()
                if exited:
                    for name, code in exited:
                        print(f'[vla-ros launch] node {name} exited with code {code}',
                              file=sys.stderr)
                    break
                time.sleep(0.1)
        finally:
            codes = self.stop()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        failed = {n: c for n, c in codes.items() if c not in (0, -signal.SIGINT)}
        return 1 if failed and not stop_requested else 0
