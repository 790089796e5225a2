"""CEL rules (`x-kubernetes-validations`) compiled and run by cel-python, as the API server runs them.

A rule passes only when it evaluates to `true`. Anything else fails it, as on the server:
`false`, a value of another type, or an evaluation error (a missing key is `no such key`,
the error that rejected the chart's CRD when `scaling.default` was `{}`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

_ENVIRONMENT = celpy.Environment()


class CelCompileError(Exception):
    """A rule the API server would refuse when the CRD is created."""


@cache
def compile_rule(rule: str) -> celpy.Runner:
    """The rule's program (cached: the CRD's rules are few and run often)."""
    try:
        return _ENVIRONMENT.program(_ENVIRONMENT.compile(rule))
    except CELParseError as error:
        raise CelCompileError(f"rule does not compile: {rule}: {error}") from None


def uses_old_self(rule: str) -> bool:
    """A transition rule: the server runs it only against an old value (never on create)."""
    return "oldSelf" in rule


def evaluation(rule: str, self_value: Any, old_value: Any = None) -> tuple[bool, str | None]:
    """(passed, the evaluation error if there was one) for the rule on `self_value`
    (`oldSelf` bound to `old_value` when given)."""
    try:
        program = compile_rule(rule)
    except CelCompileError as error:
        return False, f"rule compile error: {error}"
    try:
        bound = {"self": json_to_cel(self_value)}
        if old_value is not None:
            bound["oldSelf"] = json_to_cel(old_value)
        result = program.evaluate(bound)
    except CELEvalError as error:
        return False, _error_text(error)
    if isinstance(result, CELEvalError):  # cel-python may return an error as a value
        return False, _error_text(result)
    if isinstance(result, celtypes.BoolType):
        return bool(result), None
    return False, f"rule returned {type(result).__name__}, not bool"


def evaluate(rule: str, self_value: Any) -> bool:
    """The rule's verdict on `self_value`; an evaluation error rejects, as on the server."""
    return evaluation(rule, self_value)[0]


def _error_text(error: CELEvalError) -> str:
    detail = error.args[0] if error.args else str(error)
    text = str(detail)
    # cel-python says "no such member in mapping: 'minReplicas'"; the server "no such key: minReplicas".
    if text.startswith("no such member in mapping: "):
        return "no such key: " + text.removeprefix("no such member in mapping: ").strip("'")
    return text
