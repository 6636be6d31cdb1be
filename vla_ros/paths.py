"""Locate the package's configuration directory in a source checkout or a ROS install."""

from pathlib import Path

PACKAGE = 'vla_ros'
_SOURCE_CONFIG = Path(__file__).resolve().parent.parent / 'config'


def config_dir(*parts: str) -> Path:
    """Return the ``config`` directory (joined with ``parts``).

    A source checkout wins over an installed share directory so that edits to the YAML
    files take effect without reinstalling; the ament index is consulted only when the
    package runs from an install space (``share/vla_ros/config``).
    """
    if _SOURCE_CONFIG.is_dir():
        return _SOURCE_CONFIG.joinpath(*parts)
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory(PACKAGE)) / 'config'
        if share.is_dir():
            return share.joinpath(*parts)
    except Exception:  # ament missing or package not indexed: fall back to the source path
        pass
    return _SOURCE_CONFIG.joinpath(*parts)
