"""Images in chat messages: decoding data URLs, reading sizes, counting image tokens.

A multimodal simulated model reads an image as a run of placeholder tokens whose number
follows one formula from the image's size (`image_tokens`): the image is cut into square
cells of `cell` pixels (a vision encoder's patch size times its merge factor: 28 for
Qwen2-VL's 14-pixel patches merged 2x2), one token per cell, `ceil(w / cell) *
ceil(h / cell)`, clamped to [`min_tokens`, `max_tokens`]. Engines call it with their
model's numbers and add the count to the prompt's tokens; the prompt text carries one
`PLACEHOLDER` per image. Only data URLs are decoded here: the edge refuses other URLs
unless allow-listed, and the simulators never fetch.

Decoding and opening an image are CPU work proportional to its size: engines run
`inspect` through `generation.off_loop` for large ones (see `LARGE_IMAGE`).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from dataclasses import dataclass
from typing import Final

from PIL import Image, UnidentifiedImageError

PLACEHOLDER: Final = "<|vision_start|><|image_pad|><|vision_end|>"
"""The text an image leaves in the prompt (Qwen2-VL's markers)."""
#: Data URLs longer than this (characters) are decoded off the event loop.
LARGE_IMAGE: Final = 65536

_DATA_URL: Final = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*),", re.ASCII)


class ImageError(ValueError):
    """An image the simulated model cannot read: not a data URL, bad base64, not an image."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the model needs of an image: its format and size in pixels."""

    format: str
    width: int
    height: int


def decode_data_url(url: str) -> bytes:
    """The bytes of a base64 `data:` URL; ImageError for anything else."""
    match = _DATA_URL.match(url)
    if match is None:
        raise ImageError("the image URL is not a data URL")
    if ";base64" not in match.group("params").lower():
        raise ImageError("the image data URL is not base64-encoded")
    try:
        return base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the image data URL is not valid base64") from None


def inspect(data: bytes) -> ImageInfo:
    """The format and size of an encoded image (PNG, JPEG, ...); ImageError if it is not one.

    Reads only the header: pillow opens lazily, so no pixel is decoded.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return ImageInfo(str(image.format), image.width, image.height)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise ImageError(f"cannot identify the image: {exc}") from None


def inspect_url(url: str) -> ImageInfo:
    """`inspect(decode_data_url(url))`."""
    return inspect(decode_data_url(url))


def image_tokens(
    width: int, height: int, *, cell: int = 28, min_tokens: int = 4, max_tokens: int = 16384
) -> int:
    """How many tokens an image of `width` x `height` pixels is (see the module's docstring)."""
    cells = math.ceil(width / cell) * math.ceil(height / cell)
    return max(min_tokens, min(max_tokens, cells))
