"""Hostile files written by the tests: broken, odd and malicious inputs users meet in the wild."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(size=(32, 32), mode="RGB", colour=(200, 40, 40), **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="JPEG", **save)
    return buf.getvalue()


def truncated_jpeg(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=95)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def png16(path: Path) -> None:
    """16-bit grey: a left-to-right ramp over the whole 0..65535 range."""
    ramp = np.tile(np.linspace(0, 65535, 20).astype(np.uint16), (20, 1))
    Image.fromarray(ramp).save(path)


def cmyk_jpeg(path: Path) -> None:
    path.write_bytes(jpeg_bytes(mode="CMYK", colour=(0, 255, 255, 0)))  # pure red in ink


def rgba_png(path: Path) -> None:
    Image.new("RGBA", (20, 20), (200, 30, 30, 128)).save(path)


def palette_png(path: Path) -> None:
    im = Image.new("P", (20, 20), 1)
    im.putpalette([0, 0, 0, 210, 30, 30] + [0] * 762)
    im.save(path, transparency=0)  # index 0 transparent, as GIF-era files are


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bomb_png(path: Path, side: int = 100_000) -> None:
    """A PNG of a few bytes whose header claims side x side pixels (10^10 for the default)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                     + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def exif_rotated_jpeg(path: Path) -> None:
    """Stored 30 wide and 10 high, with EXIF orientation 6: the photo is 10 wide, 30 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 10), (200, 30, 30)).save(path, format="JPEG", exif=exif)


def non_utf8_name(folder: Path, stem: bytes = b"caf\xe9") -> str:
    """A PNG named in Latin-1 bytes, as old archives are; returns the path as Python sees it."""
    raw = os.fsencode(folder) + b"/" + stem + b".png"
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 30, 30)).save(buf, format="PNG")
    with open(raw, "wb") as f:
        f.write(buf.getvalue())
    return os.fsdecode(raw)


class Payload:
    """Pickles to a call of ``os.mkdir(marker)``: proof of code run at load time."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)
