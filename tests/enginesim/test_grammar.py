"""Sentences generated from EBNF grammars belong to the grammar's language."""

from __future__ import annotations

import ast
import json
import random
import re

import pytest

from switchyard.enginesim.structured import InvalidConstraint, parse_grammar, text_from_grammar

SEEDS = range(30)

# llama.cpp's grammars/json.gbnf, verbatim: multi-line rules, an empty alternative,
# negated classes with hex escapes, {m,n} repetition, comments.
JSON_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
"""

ARITHMETIC = """
root   ::= expr
expr   ::= term (("+" | "-") term)*
term   ::= factor (("*" | "/") factor)*
factor ::= [1-9] [0-9]* | "(" expr ")"
"""


def _balanced(text: str) -> bool:
    depth = 0
    for c in text:
        depth += 1 if c == "(" else -1
        if depth < 0:
            return False
    return depth == 0


def test_json_grammar_gives_json() -> None:
    for seed in SEEDS:
        json.loads(text_from_grammar(JSON_GBNF, random.Random(seed)))


def test_arithmetic_grammar_gives_expressions() -> None:
    for seed in SEEDS:
        ast.parse(text_from_grammar(ARITHMETIC, random.Random(seed)), mode="eval")


def test_recursive_grammar_terminates_and_stays_in_the_language() -> None:
    for seed in SEEDS:
        assert _balanced(text_from_grammar('root ::= "" | "(" root ")" root', random.Random(seed)))
        text = text_from_grammar('root ::= "a" root | "b"', random.Random(seed))
        assert re.fullmatch("a*b", text)


@pytest.mark.parametrize(
    ("grammar", "regex"),
    [
        ('root ::= greeting " " name "!"?\ngreeting ::= "hello" | "hi"\nname ::= [A-Z] [a-z]{2,5}',
         r"(hello|hi) [A-Z][a-z]{2,5}!?"),
        ('root ::= [^0-9]+ "." .', r"[^0-9]+\.."),
        ('start: "a" b\nb: /[0-9]+/ | "x"', r"a([0-9]+|x)"),
        ("digits ::= [0-9]{3} sep?\nsep ::= [-_]", r"[0-9]{3}[-_]?"),
    ],
)  # fmt: skip
def test_non_recursive_grammars_match_their_regex(grammar: str, regex: str) -> None:
    for seed in SEEDS:
        assert re.fullmatch(regex, text_from_grammar(grammar, random.Random(seed)))


def test_escapes_and_comments() -> None:
    grammar = 'root ::= "\\"q\\"" "\\x41" [\\n] "\\u00e9" # a comment\n'
    assert text_from_grammar(grammar, random.Random(0)) == '"q"A\né'


def test_start_rule_is_root_then_start_then_the_first() -> None:
    assert parse_grammar('a ::= "x"\nroot ::= "y"').start == "root"
    assert parse_grammar('a: "x"\nstart: "y"').start == "start"
    assert parse_grammar('a ::= "x"\nb ::= "y"').start == "a"


def test_same_seed_same_sentence() -> None:
    assert text_from_grammar(JSON_GBNF, random.Random(7)) == text_from_grammar(
        JSON_GBNF, random.Random(7)
    )


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ("", "defines no rules"),
        ("root ::= value", "rule 'root' refers to undefined rule 'value'"),
        ('root ::= "a', "line 1, column 10: unterminated literal"),
        ('root ::= "a"\n  x ::= ( "b"', "ends in the middle of a rule"),
        ('root ::= "a" )', "column 14: expected a rule (name ::= ...), found ')'"),
        ('root ::= "a"\nroot ::= "b"', "line 2, column 1: rule 'root' is defined twice"),
        ('root ::= "a" root', "never ends"),
        ("root ::= [z-a]", "out of order"),
        ("root ::= [abc", "unterminated character class"),
        ('root ::= "a"{3,1}', "maximum below its minimum"),
        ('root ::= "a" @', "unexpected character '@'"),
        ('"a" ::= "b"', "found 'a'"),
        ("root", "found root alone"),
    ],
)
def test_bad_grammars_are_refused_with_a_reason(grammar: str, message: str) -> None:
    with pytest.raises(InvalidConstraint, match=re.escape(message)):
        parse_grammar(grammar)
