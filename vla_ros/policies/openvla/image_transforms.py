"""OpenVLA's reference image resizing (Prismatic's three strategies), with Pillow.

The released processor resizes a PIL image with torchvision, which for PIL input calls
``Image.resize(..., BICUBIC)``: Pillow's bicubic widens its kernel when shrinking (it
antialiases), unlike OpenCV's ``INTER_CUBIC``. Doing the same Pillow call here gives the
same pixels. The per-tower normalization (DINOv2's ImageNet mean/std, SigLIP's 0.5/0.5) is
done by the model on the [0, 1] pixels.

Strategies (``image_resize_strategy``):

* ``resize-naive``: stretch to size x size (what openvla-7b uses);
* ``resize-crop``: shorter side to size (aspect kept), then a centered size x size crop;
* ``letterbox``: pad to a square with the fill colour, then as ``resize-crop`` (a no-op
  crop). Prismatic pads ``int((long - short) / 2)`` on both sides, so an odd difference
  leaves the image one pixel short of square; the crop then trims it. The fill is the last
  tower's mean in 0..255: (127, 127, 127) for DINOv2 + SigLIP.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ('resize-naive', 'resize-crop', 'letterbox')
LETTERBOX_FILL = (127, 127, 127)  # int(0.5 * 255) per channel: SigLIP's mean


def _check(rgb) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f'expected a non-empty HxWx3 uint8 RGB array, got '
                         f'{getattr(rgb, "dtype", type(rgb).__name__)} '
                         f'{getattr(rgb, "shape", "")}')
    return rgb


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

    rgb = _check(rgb)
    if strategy not in STRATEGIES:
        raise ValueError(f'unknown image_resize_strategy {strategy!r}; known: {STRATEGIES}')
    if strategy == 'letterbox':
        rgb = letterbox(rgb)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if strategy == 'resize-naive':
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
    else:
        image = _center_crop(_resize_shorter(image, size), size)
    return np.asarray(image, dtype=np.uint8).copy()
