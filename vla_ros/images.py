"""Camera frames -> policy input: what training, offline evaluation and the robot all see.

``prepare_image`` brings an HxWx3 uint8 RGB frame to a policy's declared size the
policy's declared way (``PolicySpec.image_resize``); ``normalize_image`` applies a policy's
mean/std. One function for every path (the inference engine, ``vla-ros train``, bag
export and regression), so a model is trained on exactly the pixels it later runs on.
Pure numpy/OpenCV/Pillow: no ROS here (``vla_ros.nodes.image_conversion`` turns image
messages into these arrays).

Resize methods:

* ``default``: OpenCV, INTER_AREA when shrinking (it averages, so no aliasing) and
  INTER_LINEAR when enlarging;
* OpenVLA's processor (Prismatic's three strategies, ``image_resize_strategy`` of a
  released checkpoint), done with Pillow's bicubic as the released processor does
  (torchvision calls ``Image.resize(..., BICUBIC)`` for PIL input, which widens its kernel
  when shrinking, unlike OpenCV's ``INTER_CUBIC``):

  * ``resize-naive``: stretch to size x size (what openvla-7b uses);
  * ``resize-crop``: shorter side to size (aspect kept), then a centered size x size crop;
  * ``letterbox``: pad to a square with the fill colour, then as ``resize-crop`` (a no-op
    crop). Prismatic pads ``int((long - short) / 2)`` on both sides, so an odd difference
    leaves the image one pixel short of square; the crop then trims it. The fill is the
    last tower's mean in 0..255: (127, 127, 127) for DINOv2 + SigLIP.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

DEFAULT_METHOD = 'default'
REFERENCE_STRATEGIES = ('resize-naive', 'resize-crop', 'letterbox')
RESIZE_METHODS = (DEFAULT_METHOD, *REFERENCE_STRATEGIES)
LETTERBOX_FILL = (127, 127, 127)  # int(0.5 * 255) per channel: SigLIP's mean


class ImageConversionError(ValueError):
    """An image cannot be converted (bad sizes, encoding, dtype or data)."""


def check_rgb(rgb: Any) -> np.ndarray:
    """Return ``rgb`` if it is a non-empty HxWx3 uint8 array, else ImageConversionError."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        desc = f'{rgb.dtype} {rgb.shape}' if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ImageConversionError(f'expected a non-empty HxWx3 uint8 RGB array, got {desc}')
    return rgb


def prepare_image(
    rgb: np.ndarray, size: tuple[int, int] = (224, 224), interpolation: int | None = None,
    method: str = DEFAULT_METHOD,
) -> np.ndarray:
    """Resize HxWx3 uint8 RGB to ``size`` = (width, height), returning a contiguous array.

    ``method`` is the policy's ``PolicySpec.image_resize`` (see the module docstring).
    ``'default'`` returns the input itself if it already has that size and is contiguous;
    ``interpolation`` overrides its OpenCV flag. The OpenVLA strategies need a square
    ``size``.
    """
    rgb = check_rgb(rgb)
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise ValueError(f'size must be a positive (width, height), got {size!r}')
    if method != DEFAULT_METHOD:
        if method not in REFERENCE_STRATEGIES:
            raise ValueError(f'unknown resize method {method!r}; known: '
                             f'{", ".join(RESIZE_METHODS)}')
        if w != h:
            raise ValueError(f'{method} resizes to a square; got size {size!r}')
        return reference_resize(rgb, w, method)
    if rgb.shape[:2] == (h, w):
        return np.ascontiguousarray(rgb)
    if interpolation is None:
        shrink = w <= rgb.shape[1] and h <= rgb.shape[0]
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interpolation)


def normalize_image(rgb: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """Return float32 CHW ``(rgb / 255 - mean) / std`` (mean/std per channel, [0, 1] scale)."""
    rgb = check_rgb(rgb)
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean.size != 3 or std.size != 3 or not (std > 0).all():
        raise ValueError(f'mean and std must be 3 values with std > 0, got {mean}, {std}')
    # Fold /255 into the affine map: x * (1 / (255 std)) - mean / std, one pass.
    scale = 1.0 / (255.0 * std)
    out = rgb.transpose(2, 0, 1).astype(np.float32)
    out *= scale[:, None, None]
    out -= (mean / std)[:, None, None]
    return out


# ------------------------------------------------------- OpenVLA's reference resizing
def letterbox(rgb: np.ndarray, fill=LETTERBOX_FILL) -> np.ndarray:
    """Pad symmetrically towards a square, ``int((long - short) / 2)`` pixels each side."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    pad_x, pad_y = int((side - w) / 2), int((side - h) / 2)
    out = np.empty((h + 2 * pad_y, w + 2 * pad_x, 3), dtype=np.uint8)
    out[...] = np.asarray(fill, dtype=np.uint8)
    out[pad_y:pad_y + h, pad_x:pad_x + w] = rgb
    return out


def _resize_shorter(image, size: int):
    """Torchvision ``resize(img, size)`` for PIL: shorter side -> size, long side truncated."""
    from PIL import Image

    w, h = image.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return image if new == (w, h) else image.resize(new, Image.BICUBIC)


def _center_crop(image, size: int):
    """Torchvision ``center_crop`` for an image at least ``size`` on each side."""
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def reference_resize(rgb: np.ndarray, size: int, strategy: str = 'resize-naive') -> np.ndarray:
    """HxWx3 uint8 RGB -> size x size x 3 uint8, as OpenVLA's processor resizes it."""
    from PIL import Image

    rgb = check_rgb(rgb)
    if strategy not in REFERENCE_STRATEGIES:
        raise ValueError(f'unknown image_resize_strategy {strategy!r}; known: '
                         f'{REFERENCE_STRATEGIES}')
    if strategy == 'letterbox':
        rgb = letterbox(rgb)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if strategy == 'resize-naive':
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
    else:
        image = _center_crop(_resize_shorter(image, size), size)
    return np.asarray(image, dtype=np.uint8).copy()
