"""keep_freed_memory: big blocks come from the heap and freed memory stays mapped."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')

# Run in a fresh interpreter: the thresholds are process-wide. glibc marks a block it
# got from mmap with bit 0x2 of the size word just before the block.
PROBE = textwrap.dedent('''
    import ctypes, sys
    from vla_ros.memory import keep_freed_memory
    set_ = keep_freed_memory() if sys.argv[1] == 'keep' else None
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = (ctypes.c_long,)
    block = libc.malloc(8 << 20)
    mmapped = bool(ctypes.c_size_t.from_address(block - 8).value & 2)
    top = libc.sbrk(0)
    libc.free(block)
    print(set_, mmapped, libc.sbrk(0) == top)
''')


def _probe(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    return out


def test_an_8_mb_block_comes_from_the_heap_and_stays_after_free():
    assert _probe('keep') == ['True', 'False', 'True']


def test_without_it_glibc_maps_the_block_on_its_own():
    # What the fix changes: by default a block this size is mmapped (and unmapped on free).
    assert _probe('default') == ['None', 'True', 'True']
