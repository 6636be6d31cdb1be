"""Keep freed heap memory in the process instead of returning it to the kernel each time.

Measured in the inference node (2-core VM, two 640x480 rgb8 cameras, OpenVLA at about
25 inferences/s): glibc handed the camera buffers' memory back to the kernel after each
burst of frames (a freed block at the top of a thread's heap is trimmed; a block larger
than the mmap threshold is unmapped), so the first frame of the next burst touched
about 650 fresh pages: 1.6 ms of page faults in taking one 921 KB frame, against 0.43 ms
for the frames taken after it (warm memory). Raising the thresholds keeps that memory mapped
for reuse; the cost is that a process's peak heap stays resident (a few MB here).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap, not from mmap (glibc caps it at 32 MB on
# 64-bit); freed memory is returned only when more than TRIM_THRESHOLD is free at the top.
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds for this process; whether they were set."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl): its allocator behaves differently anyway
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
