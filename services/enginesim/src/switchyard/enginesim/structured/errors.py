"""Why a structured-output constraint was refused; all are ValueErrors (a 400 upstream)."""

from __future__ import annotations


class ConstraintError(ValueError):
    """A constraint the simulator refuses."""


class InvalidConstraint(ConstraintError):
    """The constraint itself is malformed: a regex or grammar that does not parse, no choices."""


class InvalidSchema(InvalidConstraint):
    """The document is not an object or not a valid JSON Schema."""


class UnsupportedConstraint(ConstraintError):
    """A valid constraint the simulator cannot satisfy (or no string satisfies)."""


class UnsupportedSchema(UnsupportedConstraint):
    """A valid JSON Schema the simulator cannot produce an instance of."""
