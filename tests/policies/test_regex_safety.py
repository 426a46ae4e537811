"""Regex safety: ordinary patterns pass, ReDoS-prone ones get a reason, repeat counts follow the expansion,
and no pattern ``re`` accepts makes the analysis raise."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from policies.regex_safety import backtracking_risk, repeat_count

ORDINARY_PATTERNS = [
    r"^[a-z]+$",
    r"^\d{3}-\d{4}$",
    r"^(foo|bar)$",
    r"(ab)+",
    r"^\d{4}-\d{2}-\d{2}$",
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    r"^(\d{1,3}\.){3}\d{1,3}$",
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$",
    # star height 2, but each repetition ends (or starts) with a character the inner `+` cannot match
    r"^[a-z0-9]+(-[a-z0-9]+)*$",
    r"^([a-z0-9-]+\.)+[a-z]{2,}$",
    r"^[\w.+-]+@([\w-]+\.)+[\w-]{2,}$",
    r"(?i)^[a-z]+(_[a-z]+)*$",
    r"^(\+\d{1,3}\s?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}$",
]

CATASTROPHIC_PATTERNS = [
    r"(a+)+",
    r"(a*)*",
    r"(a|aa)+",
    r"(.*a){20}",
    r"^(\w+\s?)+$",
    r"(x+x+)+y",
    r"(ab|a.)+",
    r"(a{1,3})+$",
    r"([a-z]+\.[a-z0-9]+)+$",
    r"^(([a-z])+.)+[A-Z]([a-z])+$",  # OWASP's ReDoS examples
    r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$",
    r"(?i)([a-z]+[A-Z]+)+",
]


@pytest.mark.parametrize("pattern", ORDINARY_PATTERNS)
def test_ordinary_patterns_have_no_risk(pattern: str) -> None:
    assert backtracking_risk(pattern) is None


@pytest.mark.parametrize("pattern", CATASTROPHIC_PATTERNS)
def test_catastrophic_patterns_have_a_reason(pattern: str) -> None:
    reason = backtracking_risk(pattern)
    assert isinstance(reason, str) and reason


def test_the_reason_says_which_rule_fired() -> None:
    assert "split the same text" in (backtracking_risk(r"(a+)+") or "")
    assert "two alternatives" in (backtracking_risk(r"(ab|a.)+") or "")


@pytest.mark.parametrize(
    ("pattern", "count"),
    [
        (r"abc", 0),
        (r"a{2,5}b+", 6),
        (r"a{3,}", 3),
        (r"a*b?", 2),
        (r"^.{0,256}$", 256),
        (r"^[a-z]{2,254}-?\d+$", 256),
        (r"(a{4}-){3}", 12),  # nested repeats multiply: the body is expanded three times
        (r"^(([a-z]{1,64}-){64})$", 4096),
        (r"(a{100})*", 100),  # an unbounded repeat still expands its body once
        (r"(a|b{5}){2}", 10),
    ],
)
def test_repeat_count_follows_the_expansion(pattern: str, count: int) -> None:
    assert repeat_count(pattern) == count


REJECTED_BY_RE = ["[", "(?<=a+)b", "a{99999999999}", "a**", "(?P<x>a)(?P=y)", "(" * 2000 + ")" * 2000]


@pytest.mark.parametrize("pattern", REJECTED_BY_RE)
def test_a_pattern_re_rejects_raises_re_error(pattern: str) -> None:
    with pytest.raises(re.error):
        backtracking_risk(pattern)
    with pytest.raises(re.error):
        repeat_count(pattern)


_REGEXISH = st.text(alphabet="ab.*+?|()[]{}^$\\-0123,dwsSWD:=!<>P?i", max_size=24)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # re's notice about nested sets like "[[a]"
@settings(max_examples=500, deadline=None)
@given(_REGEXISH | st.text(max_size=24))
def test_never_raises_on_a_pattern_that_compiles(pattern: str) -> None:
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError):
        assume(False)
    reason = backtracking_risk(pattern)
    assert reason is None or (isinstance(reason, str) and reason)
    assert repeat_count(pattern) >= 0
