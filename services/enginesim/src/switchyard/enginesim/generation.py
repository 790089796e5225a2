"""From a prompt and sampling parameters to the completion's tokens.

The whole completion is decided up front (its tokens, where it ends and why); the
scheduler then paces the tokens out as an engine would produce them, one by one.
Randomness comes from a `random.Random` seeded with a digest of what must determine the
output: the prompt and constraint when greedy, plus the seed and sampling knobs when
seeded, fresh entropy otherwise. Never Python's `hash()`, which is salted per process.

Tokenizing and generating are CPU work proportional to their size: large ones run on a
worker thread (`off_loop`), so that the event loop keeps pacing other requests' tokens.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import hashlib
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, Literal, TypeVar

from switchyard.enginesim import tokenizer
from switchyard.enginesim.structured import Constraint
from switchyard.enginesim.vocabulary import WORDS

T = TypeVar("T")
FinishReason = Literal["stop", "length"]

#: Texts longer than this (characters) are tokenized off the event loop.
LARGE_TEXT: Final = 16384
#: Outputs longer than this (tokens), or constrained, are generated off the event loop.
LARGE_OUTPUT: Final = 2048

_MIN_NATURAL: Final = 8
_MAX_NATURAL: Final = 200
_MODE_NATURAL: Final = 40
_ENTROPY: Final = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt as the simulated model reads it: its text and how many tokens it is."""

    text: str
    tokens: int


async def off_loop(heavy: bool, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)`, on a worker thread when the work is `heavy`."""
    return await asyncio.to_thread(fn, *args) if heavy else fn(*args)


async def prompt_of(text: str) -> Prompt:
    return Prompt(text, await off_loop(len(text) > LARGE_TEXT, tokenizer.count, text))


async def prompt_of_ids(ids: Sequence[int]) -> Prompt:
    """The prompt of token ids; ValueError for an id outside the vocabulary."""
    return Prompt(await off_loop(len(ids) > LARGE_TEXT, tokenizer.decode, ids), len(ids))


async def encode(text: str) -> list[int]:
    return await off_loop(len(text) > LARGE_TEXT, tokenizer.encode, text)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """What a request asks of the sampler (engine-neutral names)."""

    max_tokens: int | None = None  # None: the engine's default, given to `generate`
    temperature: float = 1.0  # 0 is greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 or 0: off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    constraint: Constraint | None = None

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 0:
            raise ValueError(f"max_tokens must be at least 0, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be at least 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be at least 0, got {self.min_tokens}")


@dataclass(frozen=True, slots=True)
class Generation:
    """A finished completion, before pacing."""

    tokens: tuple[str, ...]
    """The output's text, one piece per token, cut at max_tokens or before a stop string
    (the last piece is then the part of its token before the stop); no EOS."""
    token_ids: tuple[int, ...]
    """The id of the token each piece of `tokens` comes from."""
    finish_reason: FinishReason
    """"stop" for EOS or a stop string, "length" for max_tokens."""
    matched_stop: str | None
    """The stop string that ended the output (not in `tokens`); None otherwise."""
    completion_tokens: int
    """Tokens the engine generated, counted as engines do: EOS and the token that
    completed a stop string included."""
    preamble_tokens: int = 0
    """How many of `tokens` are the preamble (the reasoning segment) asked of `generate`."""

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def eos(self) -> bool:
        """Whether the model ended the output itself (with its EOS token)."""
        return self.finish_reason == "stop" and self.matched_stop is None


def generate(
    prompt: str,
    params: SamplingParams,
    *,
    default_max_tokens: int,
    default_seed: int | None = None,
    preamble: str = "",
    script: str | None = None,
) -> Generation:
    """The completion of `prompt` under `params`.

    `default_max_tokens` applies when `params.max_tokens` is None; `default_seed` seeds
    requests that bring none (the simulator's `--sim-seed`). A constrained output ends
    when the constraint is complete: `ignore_eos` and `min_tokens` apply to free text.
    `preamble` is text the model writes first (a reasoning segment, see `reasoning`);
    `script`, when given, is what it writes next instead of free or constrained text
    (tool calls, see `tools.hermes`), then EOS. Both count against the output limit and
    are cut by stop strings like any output (`Generation.preamble_tokens` says where the
    preamble ends). Raises ConstraintError (a ValueError) when the constraint cannot be
    satisfied.
    """
    limit = default_max_tokens if params.max_tokens is None else params.max_tokens
    rng = _rng(prompt, params, default_seed)
    head = tokenizer.tokens(preamble)
    eos_at: int | None
    if script is not None:
        candidate = head + tokenizer.tokens(script)
        eos_at = len(candidate)
    elif params.constraint is not None:
        # Like a grammar-constrained engine: the constrained text, then only EOS is allowed.
        candidate = head + tokenizer.tokens(params.constraint.generate(rng))
        eos_at = len(candidate)
    else:
        # Drawn even when ignored, so ignore_eos only extends the same text.
        # The answer's natural length does not include the reasoning before it: a model
        # that reasoned still answers (only max_tokens can cut it short).
        room = max(0, limit - len(head))
        natural = round(rng.triangular(_MIN_NATURAL, _MAX_NATURAL, _MODE_NATURAL))
        want = room if params.ignore_eos else min(max(params.min_tokens, natural), room)
        candidate = head + _sentences(rng, want)
        eos_at = None if params.ignore_eos else len(candidate)  # EOS after a full stop
    out = candidate[:limit] if eos_at is None else candidate[: min(eos_at, limit)]
    ids = tuple(tokenizer.token_id(t) for t in out)
    cut = _cut_at_stop(out, params.stop)
    if cut is not None:
        kept, stop, generated = cut
        return Generation(
            tuple(kept), ids[: len(kept)], "stop", stop, generated, min(len(head), len(kept))
        )
    preamble_tokens = min(len(head), len(out))
    if eos_at is not None and eos_at < limit:
        return Generation(tuple(out), ids, "stop", None, eos_at + 1, preamble_tokens)
    return Generation(tuple(out), ids, "length", None, limit, preamble_tokens)


def generate_n(
    prompt: str,
    params: SamplingParams,
    n: int,
    *,
    default_max_tokens: int,
    default_seed: int | None = None,
    preamble: str = "",
    script: str | None = None,
) -> tuple[Generation, ...]:
    """`n` independent completions of `prompt` (the choices of a request with `n`).

    Choice `i` samples as if seeded with `seed + i` (vLLM's rule for `n` seeded sequences),
    so each is reproducible and they differ; greedy ones are all the same text, unseeded
    ones fresh.
    """
    return tuple(
        generate(
            prompt, choice_params(params, i, default_seed), default_max_tokens=default_max_tokens,
            default_seed=default_seed, preamble=preamble, script=script,
        )
        for i in range(n)
    )  # fmt: skip


def choice_params(
    params: SamplingParams, index: int, default_seed: int | None = None
) -> SamplingParams:
    """The sampling of choice `index` of `n`: seeded with `seed + index` when seeded."""
    seed = params.seed if params.seed is not None else default_seed
    if index == 0 or seed is None:
        return params
    return dataclasses.replace(params, seed=seed + index)


def rng(
    prompt: str, params: SamplingParams, default_seed: int | None = None, *, salt: str = ""
) -> random.Random:
    """A random generator determined like the output is (see the module's docstring), for
    decisions beside the text (reasoning, tool arguments); `salt` tells them apart."""
    return _rng(salt + prompt, params, default_seed)


async def decide(
    prompt: str, params: SamplingParams, *, default_max_tokens: int,
    default_seed: int | None = None, preamble: str = "", script: str | None = None,
) -> Generation:  # fmt: skip
    """`generate`, off the event loop when the prompt or output is large, or constrained."""
    limit = default_max_tokens if params.max_tokens is None else params.max_tokens
    heavy = len(prompt) > LARGE_TEXT or limit > LARGE_OUTPUT or params.constraint is not None
    heavy = heavy or (script is not None and len(script) > LARGE_TEXT)
    work = partial(
        generate, default_max_tokens=default_max_tokens, default_seed=default_seed,
        preamble=preamble, script=script,
    )  # fmt: skip
    return await off_loop(heavy, work, prompt, params)


def _rng(prompt: str, params: SamplingParams, default_seed: int | None) -> random.Random:
    constraint = params.constraint.fingerprint() if params.constraint is not None else ""
    seed = params.seed if params.seed is not None else default_seed
    if params.temperature == 0:
        material: tuple[object, ...] = ("greedy", constraint, prompt)
    elif seed is not None:
        knobs = (params.temperature, params.top_p, params.top_k)
        material = ("seeded", seed, *knobs, constraint, prompt)
    else:
        return random.Random(_ENTROPY.getrandbits(64))
    text = "\x00".join(str(m) for m in material)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _sentences(rng: random.Random, n: int) -> list[str]:
    """Whole English-looking sentences, at least `n` tokens; each piece is one token."""
    out: list[str] = []
    while len(out) < n:
        length = rng.randint(4, 16)
        for i in range(length):
            word = rng.choice(WORDS)
            if i == 0:
                word = word.capitalize()
            out.append(" " + word if out else word)
            if 0 < i < length - 1 and rng.random() < 0.08:
                out.append(",")
        out.append(rng.choices(".!?", weights=(90, 5, 5))[0])
    return out


def _cut_at_stop(tokens: Sequence[str], stops: Sequence[str]) -> tuple[list[str], str, int] | None:
    """(tokens before the stop, the stop, tokens generated) for the stop that ends first."""
    text = "".join(tokens)
    ends = list(itertools.accumulate(len(t) for t in tokens))
    best: tuple[int, int, int] | None = None  # (token completing it, start, -length)
    matched = ""
    for stop in stops:
        start = text.find(stop) if stop else -1
        if start < 0:
            continue
        key = (bisect.bisect_left(ends, start + len(stop)), start, -len(stop))
        if best is None or key < best:
            best, matched = key, stop
    if best is None:
        return None
    completing, start, _ = best
    whole = bisect.bisect_right(ends, start)  # tokens ending at or before the stop
    kept = list(tokens[:whole])
    kept_end = ends[whole - 1] if whole else 0
    if start > kept_end:
        kept.append(text[kept_end:start])  # the part of the next token before the stop
    return kept, matched, completing + 1
