"""How TGI's router reads images in a prompt (`router/src/validation.rs:prepare_input`).

The chat layer writes each `image_url` chunk into the text as markdown, `![](url)`. Only a
vision model's configuration makes the router look for them: it then fetches each image
(`fetch_image`: an http(s) URL, or a base64 data URL split as `data:<mime>;base64,<data>`),
and counts it as the model's image tokens. A text-only model reads the markdown as text —
TGI has no error for an image sent to it (the data URL simply becomes prompt tokens).

TGI has no flag that says a model is multimodal (the model's config does), so the
simulator's is `--sim-multimodal`. Its image counts as `images.image_tokens` of the image's
size (one formula for every simulated engine; TGI's Qwen2-VL counts pixels / patch²), run
of placeholder tokens in the prompt. The simulator never fetches: an http(s) image fails
as a fetch that did not succeed.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final

from switchyard.enginesim import images, tokenizer
from switchyard.enginesim.tgi.errors import validation

#: `![](...)`, as the router's regex finds images.
MARKDOWN_IMAGE: Final = re.compile(r"!\[\]\([^\)]*\)")
#: The id each image token of the prompt has (the toy vocabulary has no image token).
IMAGE_TOKEN_ID: Final = tokenizer.token_id(tokenizer.UNK_TOKEN)


def image_token_count(chunk: str) -> int:
    """The tokens of one `![](url)` chunk, or the router's validation error for it."""
    if chunk.startswith(("![](http://", "![](https://")):
        url = chunk[len("![](") : -1]
        raise validation(f"Could not fetch image: error sending request for url ({url})")
    if not chunk.startswith("![](data:"):
        raise validation(f"invalid image content: {chunk}")
    content = chunk[len("![](data:") : -1]
    parts = content.split(";")
    if len(parts) != 2:
        raise validation(f"invalid image content: {content}")
    data = parts[1]
    if not data.startswith("base64,"):
        raise validation(f"invalid image content: {data}")
    try:
        raw = base64.b64decode(data[len("base64,") :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise validation(f"base64 encoding is invalid: {exc}") from None
    try:
        info = images.inspect(raw)
    except images.ImageError as exc:
        raise validation(f"invalid image: {exc}") from None
    return images.image_tokens(info.width, info.height)


def prepare_input(inputs: str, multimodal: bool) -> tuple[list[int], str]:
    """The prompt's token ids and the text the model reads (images as placeholders).

    Raises a validation `InferError` for an image the router cannot read.
    """
    if not multimodal:
        return tokenizer.encode(inputs), inputs
    ids: list[int] = []
    text: list[str] = []
    start = 0
    for match in MARKDOWN_IMAGE.finditer(inputs):
        before = inputs[start : match.start()]
        ids += tokenizer.encode(before)
        ids += [IMAGE_TOKEN_ID] * image_token_count(match.group())
        text += (before, images.PLACEHOLDER)
        start = match.end()
    ids += tokenizer.encode(inputs[start:])
    text.append(inputs[start:])
    return ids, "".join(text)


def simple_tokens(inputs: str, multimodal: bool) -> list[dict[str, Any]]:
    """`/tokenize`'s tokens: `{id, text, start, stop}` with character offsets; a vision
    model's image tokens spell nothing of the input (TGI's offsets for them point into the
    text it tokenized, images expanded)."""
    if not multimodal:
        return _text_tokens(inputs, 0)
    out: list[dict[str, Any]] = []
    start = 0
    for match in MARKDOWN_IMAGE.finditer(inputs):
        out += _text_tokens(inputs[start : match.start()], start)
        image = {"id": IMAGE_TOKEN_ID, "text": "", "start": match.start(), "stop": match.start()}
        out += [image] * image_token_count(match.group())
        start = match.end()
    return out + _text_tokens(inputs[start:], start)


def _text_tokens(text: str, offset: int) -> list[dict[str, Any]]:
    out, start = [], offset
    for piece in tokenizer.tokens(text):
        stop = start + len(piece)
        out.append({"id": tokenizer.token_id(piece), "text": piece, "start": start, "stop": stop})
        start = stop
    return out
