"""MuJoCo simulation of a 7-DoF arm (optionally on a mobile base) with cameras."""

import os

# Offscreen rendering needs a GL backend chosen before mujoco is imported; EGL works
# headless out of the box (osmesa needs an extra Debian package). Users may override.
os.environ.setdefault('MUJOCO_GL', 'egl')
