"""Opening image files the way users have them: any mode, any orientation, some of them broken.

Every photo is returned as 8-bit RGB (or L for a grey image that stays grey): CMYK, palette,
RGBA/LA, 16-bit and 32-bit integer images are converted, and the EXIF orientation a camera wrote
is applied (a portrait photo stays upright). A file that cannot be decoded, or whose header claims
more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb), raises
:class:`BadImage` with the reason, which callers turn into a skip (training folders, counted and
reported) or a one-line error (a single image given on the command line).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError


class BadImage(DataError):
    """An image file that cannot be used; ``reason`` says why in a few words."""

    def __init__(self, path, reason: str):
        super().__init__(f"cannot read image {shown(path)}: {reason}")
        self.path, self.reason = path, reason


def shown(path) -> str:
    """A path as text that prints anywhere: bytes a file system holds that are not UTF-8
    (kept by Python as surrogates) come out as backslash escapes instead of an encoding error."""
    if not isinstance(path, (str, bytes, os.PathLike)):  # an image read from memory (a shard)
        return "image in memory"
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _reason(exc: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):  # its text repeats the path
        return "not an image format PIL can identify (empty, text or damaged?)"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _to_8bit(im):
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # PIL clips 16/32-bit values to 255 when converting; scale them down instead.
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(a * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = a * 255.0 if a.max(initial=0) <= 1.0 else a
        return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), "L")
    return im


def to_rgb(im, keep_grey: bool = False):
    """8-bit RGB (or L when ``keep_grey`` and the image is grey) from any PIL mode."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(_to_8bit(im))
    if im.mode == "P":
        # A palette with a transparent index goes through RGBA, as PIL asks, to drop it cleanly.
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode == "L" and keep_grey:
        return im
    return im if im.mode == "RGB" else im.convert("RGB")


def open_image(path: str | os.PathLike, keep_grey: bool = False):
    """The decoded image, converted (``to_rgb``); :class:`BadImage` when it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # A damaged EXIF block is worth no warning line; between 1x and 2x
            # MAX_IMAGE_PIXELS PIL only warns, but that is a bomb all the same.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return to_rgb(im, keep_grey)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(path, f"too many pixels (over PIL's limit of {Image.MAX_IMAGE_PIXELS:,}; "
                             f"a decompression bomb?): {_reason(exc)}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError,
            TypeError, IndexError, KeyError, ZeroDivisionError) as exc:
        # Decoders of damaged files raise all of these; none of them is our bug.
        if (isinstance(exc, OSError) and isinstance(path, (str, os.PathLike))
                and not Path(path).is_file()):
            raise BadImage(path, "not a readable file") from None
        raise BadImage(path, _reason(exc) or "damaged file") from None


def check_image(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be trained on, or None when it decodes. JPEGs decode at 1/8 scale
    (``draft``), which still reads every byte, so a truncated file is caught at a fraction of
    the cost; other formats decode fully."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
                if im.width < 1 or im.height < 1:
                    return "empty image"
        return None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"too many pixels (over PIL's limit of {Image.MAX_IMAGE_PIXELS:,})"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError,
            TypeError, IndexError, KeyError, ZeroDivisionError) as exc:
        return _reason(exc) or "damaged file"
