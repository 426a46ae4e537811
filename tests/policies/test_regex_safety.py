"""Client patterns under RE2: the patterns JSON Schemas use compile and match as ECMA-262 reads them, what would
need backtracking is refused saying why, matching stays linear on the classic ReDoS patterns, repeat counts
follow the expansion, no string makes the check raise anything but ``UnsupportedPatternError``, and
jsonschema's pattern keywords match with RE2."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator, Draft202012Validator
from jsonschema.exceptions import SchemaError

from policies.regex_safety import UnsupportedPatternError, compile_pattern, linear_time, repeat_count, search

# (pattern, a text it finds, a text it does not)
ORDINARY_PATTERNS = [
    (r"^[a-z0-9_-]{3,16}$", "user_42", "ab"),
    (r"\d{4}-\d{2}-\d{2}", "on 2024-02-29", "2024-2-29"),
    (r"^\d{3}-\d{4}$", "555-1234", "5551234"),
    (r"^(foo|bar)$", "bar", "foobar"),
    (r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", "123e4567-e89b-12d3-a456-426614174000", "x"),
    (r"^(\d{1,3}\.){3}\d{1,3}$", "10.0.0.1", "10.0.0"),
    (r"^[a-z0-9]+(-[a-z0-9]+)*$", "my-slug-2", "-slug"),
    (r"^([a-z0-9-]+\.)+[a-z]{2,}$", "api.example.com", "localhost"),
    (r"^[\w.+-]+@([\w-]+\.)+[\w-]{2,}$", "a.b+c@mail.example.org", "a@b"),
    (r"(?i)^[a-z]+(_[a-z]+)*$", "Snake_Case", "snake__case"),
    (r"^\s*\S+\s*$", "  word ", "two words"),
    (r"^.+?@.+$", "x@y", "@y"),  # non-greedy
    (r"^(?P<year>\d{4})-(?P<month>\d{2})$", "2024-02", "24-02"),  # Python's named groups
    (r"^(?<year>\d{4})-(?<month>\d{2})$", "2024-02", "24-02"),  # ECMA-262's
    (r"^(?:ab)+$", "abab", "aba"),
    (r"^[^\s@]+$", "no-spaces", "has space"),
    (r"^[a-zäöüß]+$", "straße", "strasse!"),  # non-ASCII characters written as themselves
    (r"^\u00e9\u{1F600}$", "é😀", "e😀"),  # ECMA-262 escapes
    (r"^\uD83D\uDE00$", "😀", "\ufffd"),  # a UTF-16 surrogate pair is one character
    (r"\\u0041", r"\u0041", "A"),  # an escaped backslash, then letters
    (r"^[\u0041-\u005A]+$", "ABC", "abc"),
    (r"^[[:alpha:]]+$", "abc", "a1"),
]


@pytest.mark.parametrize(("pattern", "finds", "misses"), ORDINARY_PATTERNS)
def test_ordinary_patterns_compile_and_match_as_written(pattern: str, finds: str, misses: str) -> None:
    assert search(pattern, finds)
    assert not search(pattern, misses)


def test_digit_and_word_classes_are_ascii_as_in_ecma_262() -> None:
    assert not search(r"^\d+$", "١٢٣")  # Arabic-Indic digits: Python's re would match them
    assert not search(r"^\w+$", "é")
    assert not search(r"^a$", "a\n")  # `$` is the end of the text, not a line before it


# The classic ReDoS patterns: RE2 accepts them and matches them in linear time.
CATASTROPHIC_FOR_BACKTRACKING = [
    r"(a+)+$",
    r"(a*)*$",
    r"(a|aa)+$",
    r"(.*a){20}$",
    r"^(\w+\s?)+$",
    r"(x+x+)+y",
    r"(ab|a.)+$",
    r"([a-z]+\.[a-z0-9]+)+$",
    r"^(([a-z])+.)+[A-Z]([a-z])+$",  # OWASP's ReDoS examples
    r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$",
]


@pytest.mark.parametrize("pattern", CATASTROPHIC_FOR_BACKTRACKING)
def test_patterns_that_backtrack_catastrophically_in_re_run_in_linear_time(pattern: str) -> None:
    near_misses = ["a" * 20_000 + "!", "x" * 20_000, "aB" * 10_000 + "!", ("ab" * 10_000) + "@"]
    started = time.perf_counter()
    for text in near_misses:
        search(pattern, text)
    # Exponential under Python's re (it would not end); far under this in linear time, even on a loaded machine.
    assert time.perf_counter() - started < 10.0


REFUSED = {
    r"(a)\1": "backreference",
    r"(?<n>a)\k<n>": "backreference",
    r"(?P<n>a)(?P=n)": "named backreference or recursion",
    r"(?=a)a": "look-ahead",
    r"(?!b)a": "look-ahead",
    r"(?<=a)b": "look-behind",
    r"(?<!a)b": "look-behind",
    r"(?>a+)b": "atomic group",
    r"a++b": "possessive quantifier",
    r"a{2}+": "possessive quantifier",
    r"a{1001}": "counted repeat over 1000",
    r"((a{10}){10}){11}": "counted repeat over 1000",
    r"\p{L}+": "Unicode property classes are not supported",
    r"[\pL]": "Unicode property classes are not supported",
    r"\Qa.b\E": "quoting",
    r"ab\z": "write \\$",
    r"\C": "any byte",
    "[": "missing ]",
    "(": "missing \\)",
    ".{1000}" * 8: "memory budget of 1 MiB",
    "\\": "trailing",
    r"\x{110000}": "invalid escape",
    r"\cA": "invalid escape",
}


@pytest.mark.parametrize(("pattern", "why"), REFUSED.items())
def test_what_re2_cannot_run_is_refused_saying_why(pattern: str, why: str) -> None:
    with pytest.raises(UnsupportedPatternError, match=why):
        compile_pattern(pattern)
    with pytest.raises(UnsupportedPatternError, match=why):
        repeat_count(pattern)


def test_a_refused_pattern_stays_refused() -> None:
    """Failures are not cached as successes."""
    for _ in range(2):
        with pytest.raises(UnsupportedPatternError):
            compile_pattern(r"(a)\1")


@pytest.mark.parametrize(
    ("pattern", "count"),
    [
        (r"abc", 0),
        (r"a{2,5}b+", 6),
        (r"a{3,}", 3),
        (r"a*b?", 2),
        (r"a+?b{2,3}?", 4),  # non-greedy quantifiers count like greedy ones
        (r"^.{0,256}$", 256),
        (r"^[a-z]{2,254}-?\d+$", 256),
        (r"(a{4}-){3}", 12),  # nested repeats multiply: the body is expanded three times
        (r"^(([a-z]{1,16}-){17})$", 272),
        (r"(a{100})*", 100),  # an unbounded repeat still expands its body once
        (r"(a|b{5}){2}", 10),
        (r"(?P<n>a{2}){3}", 6),
        (r"(?<n>a{2}){3}", 6),
        (r"(?i)a{2}(?:b){3}", 5),
        (r"[{]{3}[]a]{2}[\]]{4}[[:alpha:]]{5}", 14),  # braces and brackets inside sets are not syntax
        (r"\u007b{3}\x{7b}{2}\{{4}", 9),
        (r"a{,5}", 0),  # RE2 reads `{,5}` as text, as ECMA-262 does
    ],
)
def test_repeat_count_follows_the_expansion(pattern: str, count: int) -> None:
    assert repeat_count(pattern) == count


_REGEXISH = st.text(alphabet="ab.*+?|()[]{}^$\\-0123,dwsSWD:=!<>Pkpuxz", max_size=24)


@settings(max_examples=500, deadline=None)
@given(_REGEXISH | st.text(max_size=24))
def test_any_string_compiles_or_is_refused_and_counts_when_accepted(pattern: str) -> None:
    try:
        compile_pattern(pattern)
    except UnsupportedPatternError as exc:
        assert str(exc)
        return
    assert repeat_count(pattern) >= 0
    search(pattern, "ab01-" * 5)


# --- jsonschema matching with RE2 ---------------------------------------------------------------------------


def _errors(schema: dict, instance: object) -> list[str]:
    cls = linear_time(Draft202012Validator)
    cls.check_schema(schema, format_checker=cls.FORMAT_CHECKER)
    return sorted(error.message for error in cls(schema).iter_errors(instance))


def test_pattern_keywords_match_with_re2_in_linear_time() -> None:
    near_miss = "a" * 20_000 + "!"
    started = time.perf_counter()
    assert _errors({"pattern": "(a+)+$"}, near_miss) == [f"{near_miss!r} does not match '(a+)+$'"]
    assert _errors({"patternProperties": {"(a|aa)+$": {"type": "integer"}}}, {near_miss: "x", "aa": "x"}) == [
        "'x' is not of type 'integer'"]
    assert _errors({"propertyNames": {"pattern": r"^(\w+\s?)+$"}}, {near_miss: 1}) == [
        f"{near_miss!r} does not match '^(\\\\w+\\\\s?)+$'"]
    assert _errors({"patternProperties": {"(x+x+)+y": {}}, "additionalProperties": False}, {"x" * 20_000: 1}) == [
        f"{'x' * 20_000!r} does not match any of the regexes: '(x+x+)+y'"]
    assert time.perf_counter() - started < 10.0  # exponential time would not end: a wide margin for load


PARITY_CASES = [
    ({"properties": {"a": {}}, "additionalProperties": False}, {"a": 1, "b": 2, "c": 3}),
    ({"properties": {"a": {}}, "patternProperties": {"^x-": {}}, "additionalProperties": False}, {"x-1": 1, "b": 2}),
    ({"patternProperties": {"^x-": {}, "^y": {}}, "additionalProperties": False}, {"b": 1, "c": 2}),
    ({"patternProperties": {"^x-": {}}, "additionalProperties": {"type": "integer"}}, {"x-1": "s", "b": "s"}),
    ({"patternProperties": {"^[a-z]+$": {"type": "string"}, "^a": {"minLength": 2}}}, {"ab": 1, "a": "x", "1": 1}),
    ({"type": "object", "properties": {"d": {"type": "string", "pattern": r"^\d{4}$"}}}, {"d": "12345"}),
    ({"propertyNames": {"pattern": "^[a-z]+$"}}, {"ok": 1, "Not": 2}),
    ({"additionalProperties": False}, {}),
]


@pytest.mark.parametrize(("schema", "instance"), PARITY_CASES)
def test_errors_are_jsonschemas_own_on_ordinary_patterns(schema: dict, instance: object) -> None:
    expected = sorted(error.message for error in Draft202012Validator(schema).iter_errors(instance))
    assert _errors(schema, instance) == expected


def test_the_meta_schema_check_reads_regex_as_re2() -> None:
    """jsonschema's own `regex` format is Python's `re`, which refuses ECMA-262 named groups and would accept
    a backreference."""
    assert _errors({"pattern": r"^(?<year>\d{4})$"}, "2024") == []
    with pytest.raises(SchemaError, match="is not a 'regex'"):
        _errors({"pattern": r"(a)\1"}, "aa")


def test_other_drafts_match_with_re2_too() -> None:
    cls = linear_time(Draft7Validator)
    assert list(cls({"pattern": "^a$"}).iter_errors("a")) == []
    assert cls.VALIDATORS["pattern"] is linear_time(Draft202012Validator).VALIDATORS["pattern"]
