#!/usr/bin/env bash
# Generate vla_ros_msgs from msg/ with the real rosidl toolchain (ament_cmake +
# rosidl_generate_interfaces) and install it into the virtual environment given as $1,
# so nothing has to be sourced afterwards. Used by the Makefile; on a full ROS 2 install
# use colcon instead (see README).
set -euo pipefail
venv=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
build="$repo/build/vla_ros_msgs"
py="$venv/bin/python"
mkdir -p "$build"
export AMENT_PREFIX_PATH="$venv"
export CMAKE_PREFIX_PATH="$venv"
# The ROS wheels' bootstrapper re-executes Python with LD_LIBRARY_PATH set; do it once
# here so cmake's child processes (the generators) see the same libraries.
export LD_LIBRARY_PATH="$venv/lib:${LD_LIBRARY_PATH:-}"
cmake -S "$repo/msg" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$venv" \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$py" \
  -DVLA_ROS_FIX_WHEEL_PY_INCLUDES=ON \
  -DBUILD_TESTING=OFF >"$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j 2 >"$build/build.log" 2>&1 || { tail -60 "$build/build.log"; exit 1; }
cmake --install "$build" >"$build/install.log" 2>&1 || { tail -30 "$build/install.log"; exit 1; }
