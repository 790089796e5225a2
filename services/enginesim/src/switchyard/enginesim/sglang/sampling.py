"""SGLang's `SamplingParams`: defaults, normalisation and `verify()`, with SGLang's messages.

Native `sampling_params` and the OpenAI routes' converted parameters both end here, as
in SGLang's tokenizer manager. Failures are ValueErrors (HTTP 400); a key SGLang's
`SamplingParams` does not have is a TypeError there (an HTTP 500), so it is one here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from switchyard.enginesim import generation
from switchyard.enginesim.structured import Constraint, UnsupportedConstraint
from switchyard.enginesim.tokenizer import VOCAB_SIZE

TOP_K_ALL: Final = 1 << 30
MAX_STOP_COUNT: Final = 32
_EPS: Final = 1e-6
#: What `SamplingParams(**kwargs)` accepts (its API fields).
FIELDS: Final = frozenset(
    {
        "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p",
        "top_k", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty",
        "min_new_tokens", "n", "beam_width", "json_schema", "regex", "ebnf", "structural_tag",
        "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim",
        "stream_interval", "logit_bias", "sampling_seed", "custom_params", "watermark",
    }
)  # fmt: skip
_GRAMMARS: Final = ("json_schema", "regex", "ebnf", "structural_tag")
#: The grammar key SGLang names in "Failed to compile <key> grammar: ...".
_GRAMMAR_KEYS: Final = {"json_schema": "json", "regex": "regex", "ebnf": "ebnf"}


class UnexpectedSamplingParam(TypeError):
    """A key the engine's SamplingParams has no field for."""


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """A structured-output request, compiled by the engine (failures abort with 400)."""

    key: str  # "json", "regex", "ebnf" or "structural_tag"
    value: str

    def build(self) -> Constraint:
        """The simulator's constraint; raises ConstraintError like a failed grammar compile."""
        if self.key == "json":
            return Constraint("json_schema", self.value)
        if self.key == "regex":
            return Constraint("regex", self.value)
        if self.key == "ebnf":
            return Constraint("grammar", self.value)
        raise UnsupportedConstraint(f"the simulator cannot generate a {self.key} output")


@dataclass(frozen=True, slots=True)
class Sampling:
    """Verified sampling parameters, as the simulated model uses them."""

    max_new_tokens: int | None
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    temperature: float = 1.0  # 0.0: greedy (SGLang: top_k == 1)
    top_p: float = 1.0
    top_k: int = -1  # -1: the whole vocabulary
    ignore_eos: bool = False
    seed: int | None = None
    grammar: GrammarSpec | None = None

    def generation_params(self, max_tokens: int) -> generation.SamplingParams:
        """The core's parameters, with the engine's effective token budget."""
        return generation.SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=self.stop,
            ignore_eos=self.ignore_eos,
            min_tokens=min(self.min_new_tokens, max_tokens),
        )


def _number(params: Mapping[str, Any], name: str, default: float) -> float:
    value = params.get(name)
    return default if value is None else float(value)


def _integer(params: Mapping[str, Any], name: str, default: int) -> int:
    value = params.get(name)
    return default if value is None else int(value)


def parse_sampling(params: Mapping[str, Any]) -> Sampling:
    """Build, normalise and verify, in SGLang's order; ValueError with its message."""
    unexpected = sorted(set(params) - FIELDS)
    if unexpected:
        raise UnexpectedSamplingParam(f"Unexpected keyword argument {unexpected[0]!r}")
    # __post_init__: None means the default.
    temperature = _number(params, "temperature", 1.0)
    top_p = _number(params, "top_p", 1.0)
    top_k = _integer(params, "top_k", TOP_K_ALL)
    min_p = _number(params, "min_p", 0.0)
    frequency_penalty = _number(params, "frequency_penalty", 0.0)
    presence_penalty = _number(params, "presence_penalty", 0.0)
    repetition_penalty = _number(params, "repetition_penalty", 1.0)
    min_new_tokens = _integer(params, "min_new_tokens", 0)
    max_new_tokens = params.get("max_new_tokens", 128)
    grammars = {name: params.get(name) or None for name in _GRAMMARS}
    if 0 <= temperature < _EPS:
        temperature, top_k = 1.0, 1  # greedy
    if top_k == -1:
        top_k = TOP_K_ALL
    # normalize(): stop strings.
    stop = params.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_COUNT:
        raise ValueError(f"at most {MAX_STOP_COUNT} stop strings are allowed, got {len(stops)}")
    # verify()
    beam_width = params.get("beam_width")
    if beam_width is not None and beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}.")
    if not math.isfinite(temperature) or temperature < 0.0:
        raise ValueError(f"temperature must be a non-negative finite number, got {temperature}.")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}.")
    if top_k < 1:
        raise ValueError(f"top_k must be -1 (disable) or at least 1, got {top_k}.")
    if not -2.0 <= frequency_penalty <= 2.0:
        raise ValueError(f"frequency_penalty must be in [-2, 2], got {frequency_penalty}.")
    if not -2.0 <= presence_penalty <= 2.0:
        raise ValueError(f"presence_penalty must be in [-2, 2], got {presence_penalty}.")
    if not 0.0 < repetition_penalty <= 2.0:
        raise ValueError(
            f"repetition_penalty must be in (0, 2] (1.0 = no penalty), got {repetition_penalty}."
        )
    if min_new_tokens < 0:
        raise ValueError(f"min_new_tokens must be in [0, max_new_tokens], got {min_new_tokens}.")
    if max_new_tokens is not None:
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be at least 0, got {max_new_tokens}.")
        if min_new_tokens > max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be in [0, max_new_tokens({max_new_tokens})], got "
                f"{min_new_tokens}."
            )
    for token_id in params.get("logit_bias") or {}:
        if not 0 <= int(token_id) < VOCAB_SIZE:
            raise ValueError(f"logit_bias must has keys in [0, {VOCAB_SIZE - 1}], got {token_id}.")
    seed = params.get("sampling_seed")
    if seed is not None and not -(2**63) <= seed <= 2**63 - 1:
        raise ValueError(f"sampling_seed must be in [-2**63, 2**63 - 1], got {seed}.")
    chosen = [(name, value) for name, value in grammars.items() if value is not None]
    if len(chosen) > 1:
        raise ValueError("Only one of json_schema, regex, ebnf, or structural_tag can be set.")
    grammar = None
    if chosen:
        name, value = chosen[0]
        grammar = GrammarSpec(_GRAMMAR_KEYS.get(name, name), str(value))
    n = _integer(params, "n", 1)
    if n != 1:
        raise ValueError(f"The SGLang simulator generates one sample per request, got n={n}.")
    return Sampling(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        stop=tuple(stops),
        temperature=0.0 if top_k == 1 else temperature,
        top_p=top_p,
        top_k=-1 if top_k == TOP_K_ALL else top_k,
        ignore_eos=bool(params.get("ignore_eos")),
        seed=seed,
        grammar=grammar,
    )
