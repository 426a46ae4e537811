"""Token confidence where the answer's content is: argument values and the chosen function name.

Under guided decoding most generated tokens are JSON scaffolding the grammar forces or nearly forces (`{"`,
`":`, keys). vLLM 0.32 returns logprobs taken after the grammar mask: forced tokens come back at 0.0 and
disallowed alternatives at -9999, and two spellings of the same JSON (`{"` or `{`) still split probability
between them. None of that is about whether the answer is right. The uncertainty about the answer sits in
the tokens of the values (`Paris`, `celsius`, `42`) and of the function name, so these features read only
those tokens: the mean and minimum logprob, and the margin between the two best alternatives.

The generated text is the concatenation of the token strings; a small JSON scanner finds the value spans in it.
An answer that is not JSON (truncated at max_tokens, plain text) has no value features.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MARGIN_CAP", "Span", "ValueTokenFeatures", "value_spans", "value_token_features"]

# A margin against an alternative the grammar masked (-9999) is "certain"; capped so features stay on one scale.
MARGIN_CAP = 20.0
_LOGPROB_FLOOR = -100.0
_WHITESPACE = " \t\r\n"
_LITERAL = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of one JSON value; ``is_name`` marks a tool call's function name."""

    start: int
    end: int
    is_name: bool = False


@dataclass(frozen=True)
class ValueTokenFeatures:
    """Features over the value tokens; ``None`` where the answer has no such token (or no logprobs)."""

    mean_logprob: float | None = None
    min_logprob: float | None = None
    min_margin: float | None = None
    mean_margin: float | None = None
    name_min_logprob: float | None = None
    value_tokens: int = 0


def value_token_features(tokens: Sequence[Mapping[str, Any]]) -> ValueTokenFeatures:
    """Features of the tokens (OpenAI ``logprobs.content`` entries) that overlap a value span of their text."""
    text = "".join(str(t.get("token", "")) for t in tokens)
    spans = value_spans(text)
    if not spans:
        return ValueTokenFeatures()
    values: list[tuple[float, float]] = []  # (logprob, margin)
    names: list[float] = []
    position = 0
    span_index = 0
    for token in tokens:
        start, end = position, position + len(str(token.get("token", "")))
        position = end
        while span_index < len(spans) and spans[span_index].end <= start:
            span_index += 1
        overlapping = [s for s in spans[span_index:span_index + 2] if s.start < end and start < s.end]
        if not overlapping or start == end:
            continue
        logprob = max(_LOGPROB_FLOOR, min(0.0, float(token.get("logprob", 0.0))))
        if any(s.is_name for s in overlapping):
            names.append(logprob)
        else:
            values.append((logprob, _margin(token)))
    if not values and not names:
        return ValueTokenFeatures()
    logprobs = [lp for lp, _ in values]
    margins = [m for _, m in values]
    return ValueTokenFeatures(
        mean_logprob=math.fsum(logprobs) / len(logprobs) if logprobs else None,
        min_logprob=min(logprobs, default=None),
        min_margin=min(margins, default=None),
        mean_margin=math.fsum(margins) / len(margins) if margins else None,
        name_min_logprob=min(names, default=None),
        value_tokens=len(values),
    )


def _margin(token: Mapping[str, Any]) -> float:
    """Top-1 minus top-2 logprob among the alternatives (masked ones count as absent), capped."""
    alternatives = sorted((float(a.get("logprob", -math.inf)) for a in token.get("top_logprobs") or []),
                          reverse=True)
    alternatives = [lp for lp in alternatives if lp > _LOGPROB_FLOOR]
    if len(alternatives) < 2:
        return MARGIN_CAP
    return min(MARGIN_CAP, alternatives[0] - alternatives[1])


def value_spans(text: str) -> list[Span]:
    """The spans of the leaf values of the JSON value that ``text`` starts with (string contents without
    quotes, numbers, literals), in order; keys are not values. What follows the value (an end-of-turn token)
    is ignored. Not JSON, or cut short: no spans."""
    scanner = _Scanner(text)
    try:
        scanner.value(())
    except (IndexError, ValueError, RecursionError):  # RecursionError: a `json_object` answer nested absurdly deep
        return []
    return scanner.spans


class _Scanner:
    """Recursive descent over one JSON value, recording leaf spans and whether a leaf is `[i].name`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.spans: list[Span] = []

    def skip_whitespace(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in _WHITESPACE:
            self.at += 1

    def value(self, path: tuple[Any, ...]) -> None:
        self.skip_whitespace()
        char = self.text[self.at]
        if char == "{":
            self._object(path)
        elif char == "[":
            self._array(path)
        elif char == '"':
            start = self.at + 1
            end = self._string()
            is_name = len(path) == 2 and isinstance(path[0], int) and path[1] == "name"
            self.spans.append(Span(start, max(start, end - 1), is_name))
        else:
            literal = _LITERAL.match(self.text, self.at)
            if literal is None:
                raise ValueError(f"no JSON value at {self.at}")
            self.spans.append(Span(self.at, literal.end()))
            self.at = literal.end()

    def _string(self) -> int:
        """Consume a string starting at its opening quote; return the index after its closing quote."""
        self.at += 1
        while self.text[self.at] != '"':
            self.at += 2 if self.text[self.at] == "\\" else 1
        self.at += 1
        return self.at

    def _object(self, path: tuple[Any, ...]) -> None:
        self.at += 1
        self.skip_whitespace()
        if self.text[self.at] == "}":
            self.at += 1
            return
        while True:
            self.skip_whitespace()
            key_start = self.at + 1
            key = self.text[key_start:self._string() - 1]
            self.skip_whitespace()
            self._expect(":")
            self.value((*path, key))
            self.skip_whitespace()
            if self._separator("}"):
                return

    def _array(self, path: tuple[Any, ...]) -> None:
        self.at += 1
        self.skip_whitespace()
        if self.text[self.at] == "]":
            self.at += 1
            return
        index = 0
        while True:
            self.value((*path, index))
            index += 1
            self.skip_whitespace()
            if self._separator("]"):
                return

    def _expect(self, char: str) -> None:
        if self.text[self.at] != char:
            raise ValueError(f"expected {char!r} at {self.at}")
        self.at += 1

    def _separator(self, closer: str) -> bool:
        """Consume ',' (more to come: False) or the closer (done: True)."""
        char = self.text[self.at]
        self.at += 1
        if char == closer:
            return True
        if char != ",":
            raise ValueError(f"expected ',' or {closer!r}")
        return False
