"""Images: data URLs decoded, sizes read with pillow, the image token formula."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from switchyard.enginesim.images import (
    ImageError,
    decode_data_url,
    image_tokens,
    inspect,
    inspect_url,
)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def test_reads_the_size_of_a_data_url() -> None:
    info = inspect_url(data_url(png(64, 30)))
    assert (info.format, info.width, info.height) == ("PNG", 64, 30)
    assert decode_data_url(data_url(b"abc")) == b"abc"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/cat.png", "not a data URL"),
        ("data:image/png,rawtext", "not base64"),
        ("data:image/png;base64,@@@", "not valid base64"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_data_url(url)


def test_bytes_that_are_not_an_image_are_refused() -> None:
    with pytest.raises(ImageError, match="cannot identify"):
        inspect(b"not an image at all")


@pytest.mark.parametrize(
    ("size", "tokens"),
    [((28, 28), 4), ((56, 56), 4), ((280, 140), 50), ((281, 140), 55), ((10_000, 10_000), 16384)],
)
def test_token_formula(size: tuple[int, int], tokens: int) -> None:
    assert image_tokens(*size) == tokens  # ceil(w/28) * ceil(h/28), within [4, 16384]


def test_a_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # pillow refuses over twice this
    with pytest.raises(ImageError, match="cannot identify"):
        inspect(png(10, 10))
