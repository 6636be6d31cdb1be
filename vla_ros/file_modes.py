"""Give files written through libraries the permissions a plain ``open()`` would.

safetensors' ``save_file`` (used directly and by transformers' ``save_pretrained``)
writes through a private temporary file and renames it, so weights end up mode 0600
whatever the user's umask; a checkpoint another user or a service account must read
then fails to load. :func:`respect_umask` sets such files to ``0666 & ~umask``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it is not thread-safe)."""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def respect_umask(path: str | Path) -> None:
    """Set ``path`` (a file, or every file under a directory) to ``0666 & ~umask``.

    Only permission bits a normal write would have granted are added; execute bits and
    anything the user set more openly are left alone.
    """
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob('*') if p.is_file()]
    wanted = 0o666 & ~current_umask()
    for file in files:
        mode = file.stat().st_mode & 0o777
        if mode | wanted != mode:
            os.chmod(file, mode | wanted)
