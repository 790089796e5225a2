"""Structured outputs: text that really conforms to a JSON schema, regex, choice or grammar.

Every function takes a `random.Random`, so output is reproducible given its seed.
"""

from switchyard.enginesim.structured.constraint import (
    Constraint,
    ConstraintKind,
    ConstraintValue,
    choice,
)
from switchyard.enginesim.structured.errors import (
    ConstraintError,
    InvalidConstraint,
    InvalidSchema,
    UnsupportedConstraint,
    UnsupportedSchema,
)
from switchyard.enginesim.structured.grammar import Grammar, parse_grammar, text_from_grammar
from switchyard.enginesim.structured.regex import text_from_regex
from switchyard.enginesim.structured.schema import (
    SchemaWriter,
    json_from_schema,
    json_object,
    validate_schema,
)

__all__ = [
    "Constraint",
    "ConstraintError",
    "ConstraintKind",
    "ConstraintValue",
    "Grammar",
    "InvalidConstraint",
    "InvalidSchema",
    "SchemaWriter",
    "UnsupportedConstraint",
    "UnsupportedSchema",
    "choice",
    "json_from_schema",
    "json_object",
    "parse_grammar",
    "text_from_grammar",
    "text_from_regex",
    "validate_schema",
]
