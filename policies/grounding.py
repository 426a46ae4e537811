"""Grounding: is every value in an answer supported by the conversation or by the schema?

The schema and tool-call verifiers check form; a small model's typical wrong answer has perfect form and a
made-up value (`get_weather(city="Dijon")` for a question about Paris). This verifier looks at every leaf
value of the answer (tool-call arguments, or a JSON answer's fields) and asks where it could have come from:

- the schema: an `enum` value (unless the conversation names other allowed values and not this one), a
  `const` or `default` value, a short value stated in the field's description ("Default is 'cm'"), a boolean,
  null, an empty string;
- the conversation: a string found in the messages after normalisation (case, whitespace, punctuation), or,
  for a multi-word string, the share of its words that are found; a number found among the numbers written in
  the messages, after normalisation ("1,000" -> 1000, "20%" -> 20 and 0.2, "five" -> 5, "half" -> 0.5).

The score is the mean support over the leaves (1.0 for an answer with none). The same call made twice in one
answer counts as one unsupported leaf more: models pad parallel answers with copies. No model is involved; the
verdict's reasons name each unsupported value, and the repair prompt passes them on.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.verifiers import Candidate, Verdict, Verifier

__all__ = ["GroundingReport", "GroundingVerifier", "Leaf", "Sources", "TextIndex", "conversation_text",
           "ground_values"]

# A leaf whose support is below this is named in the reasons.
UNSUPPORTED_BELOW = 0.5
_DESCRIBED_WORDS = 3
_MAX_REASONS = 8
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?\s*%?", re.IGNORECASE)
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12, "half": 0.5, "quarter": 0.25, "once": 1,
    "twice": 2, "thrice": 3, "single": 1, "double": 2, "triple": 3, "first": 1, "second": 2, "third": 3,
    "fourth": 4, "fifth": 5, "tenth": 10, "hundredth": 100, "percent": 0.01,
}
_DATE = re.compile(r"(?P<year>\d{4})[-/.](?P<month>\d{1,2})[-/.](?P<day>\d{1,2})|"
                   r"(?P<m2>\d{1,2})[-/.](?P<d2>\d{1,2})[-/.](?P<y2>\d{4})")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_NUMBER_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "bn": 1e9, "thousand": 1e3, "million": 1e6, "billion": 1e9}


@dataclass(frozen=True)
class Leaf:
    """One value of the answer, where it sits, and the schema that describes it (empty when unknown)."""

    path: str
    value: Any
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class GroundingReport:
    """``score``: mean support in [0, 1]; ``supports``: per leaf; ``unsupported``: the reasons to show."""

    score: float
    supports: tuple[float, ...]
    duplicate_calls: int
    unsupported: tuple[str, ...]

    @property
    def min_support(self) -> float:
        return min(self.supports, default=1.0)


class TextIndex:
    """A text (the conversation, or a field's description), normalised once: its words and its numbers."""

    def __init__(self, text: str) -> None:
        self.text = _normalise(text)
        self.padded = f" {self.text} "
        self.joined = self.text.replace(" ", "")
        self.words = frozenset(self.text.split())
        self.numbers = frozenset(abs(n) for n in _numbers_in(text))

    def string_support(self, value: str) -> float:
        norm = _normalise(value)
        if not norm or f" {norm} " in self.padded:
            return 1.0
        date = _DATE.fullmatch(value.strip())
        if date:
            return self._date_support(date)
        words = norm.split()
        if len(words) == 1:
            # Inside a longer run of letters: only for long values ("york" in "newyork" is no evidence), or for
            # scripts written without spaces (CJK), where a name is a few characters of a longer run.
            found = norm in self.joined and (len(norm) >= 4 or not norm.isascii())
            return 1.0 if found else 0.0
        return sum(word in self.words for word in words) / len(words)

    def number_support(self, value: float) -> float:
        """Found among the written numbers, sign aside ("a loss of 1000" is -1000); zero needs no source."""
        value = abs(value)
        if value == 0.0:
            return 1.0
        return 1.0 if any(math.isclose(value, n, rel_tol=1e-9, abs_tol=1e-9) for n in self.numbers) else 0.0

    def _date_support(self, date: re.Match[str]) -> float:
        """A date in digits ("2023-06-30") against one written in words ("June 30th, 2023"): the share of year,
        month and day found."""
        parts = date.groupdict()
        year, month, day = (int(parts[a] or parts[b]) for a, b in (("year", "y2"), ("month", "m2"), ("day", "d2")))
        found = [
            float(year) in self.numbers,
            float(month) in self.numbers or (1 <= month <= 12 and _MONTHS[month - 1] in self.words),
            float(day) in self.numbers,
        ]
        return sum(found) / 3


class Sources:
    """Where a value may come from: the conversation, and each field's description (defaults stated in words,
    "Default is 'cm'")."""

    def __init__(self, conversation: str) -> None:
        self.conversation = TextIndex(conversation)
        self._descriptions: dict[str, TextIndex] = {}

    def description(self, schema: Mapping[str, Any]) -> TextIndex | None:
        text = schema.get("description")
        if not isinstance(text, str) or not text:
            return None
        if text not in self._descriptions:
            self._descriptions[text] = TextIndex(text)
        return self._descriptions[text]


def conversation_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Everything the model was told: message contents (text parts too) and earlier tool calls' arguments."""
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                parts.append(str(function.get("arguments") or ""))
    return "\n".join(parts)


def ground_values(leaves: Sequence[Leaf], sources: Sources, duplicate_calls: int = 0) -> GroundingReport:
    """Support of each leaf, the mean, and a reason for each leaf found wanting."""
    supports: list[float] = []
    reasons: list[str] = []
    for leaf in leaves:
        support = _support(leaf, sources)
        supports.append(support)
        if support < UNSUPPORTED_BELOW:
            reasons.append(f"{leaf.path}: {json.dumps(leaf.value, ensure_ascii=False)[:80]} does not appear in the "
                           "request")
    if duplicate_calls:
        reasons.append(f"the same call is made {duplicate_calls + 1} times")
    total = len(supports) + duplicate_calls
    score = math.fsum(supports) / total if total else 1.0
    return GroundingReport(score, tuple(supports), duplicate_calls, tuple(reasons[:_MAX_REASONS]))


def _support(leaf: Leaf, sources: Sources) -> float:
    """The best support any source gives the leaf's value."""
    value, schema = leaf.value, leaf.schema
    if value is None or isinstance(value, bool):
        return 1.0
    enum = schema.get("enum")
    if isinstance(enum, list) and value in enum:
        return _enum_support(value, enum, sources.conversation)
    if _in_schema(value, schema):
        return 1.0
    description = sources.description(schema)
    if isinstance(value, str):
        support = sources.conversation.string_support(value)
        # A description supports a short value (a default stated in words), not a sentence copied out of it:
        # small models fill `content` with the parameter's own description.
        if description is not None and len(value.split()) <= _DESCRIBED_WORDS:
            support = max(support, description.string_support(value))
        return support
    if isinstance(value, (int, float)):
        texts = [sources.conversation, *([description] if description is not None else [])]
        return max(text.number_support(float(value)) for text in texts)
    return 1.0


def _enum_support(value: Any, enum: list[Any], conversation: TextIndex) -> float:
    """An allowed value is supported unless the conversation names other allowed values and not this one
    ("add it" answered with `type: delete`)."""
    if not all(isinstance(option, str) for option in enum):
        return 1.0
    named = [option for option in enum if conversation.string_support(option) == 1.0]
    return 1.0 if not named or value in named else 0.0


def _in_schema(value: Any, schema: Mapping[str, Any]) -> bool:
    if "const" in schema and schema["const"] == value:
        return True
    if "default" in schema and schema["default"] == value:
        return True
    enum = schema.get("enum")
    return isinstance(enum, list) and value in enum


class GroundingVerifier(Verifier):
    """Fails an answer with a leaf supported below ``UNSUPPORTED_BELOW`` or a repeated call; scores the mean.

    Built per request from the conversation and the tools (or the response schema); ``verify`` reads the
    candidate's tool calls, or its text as JSON when it made none.
    """

    name = "grounding"

    def __init__(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] = (),
        response_schema: Mapping[str, Any] | None = None,
    ) -> None:
        self._sources = Sources(conversation_text(messages))
        self._parameters = {
            t["function"]["name"]: t["function"].get("parameters") or {}
            for t in tools
            if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
        }
        self._response_schema = response_schema if isinstance(response_schema, Mapping) else {}

    def report(self, candidate: Candidate) -> GroundingReport:
        leaves: list[Leaf] = []
        duplicates = 0
        if candidate.tool_calls:
            seen: set[tuple[str, str]] = set()
            for name, arguments in candidate.tool_calls:
                args = _loads(arguments)
                key = (name, json.dumps(args, sort_keys=True))
                duplicates += key in seen
                seen.add(key)
                leaves += _leaves(args, self._parameters.get(name, {}), name)
        else:
            leaves = list(_leaves(_loads(candidate.text), self._response_schema, "answer"))
        return ground_values(leaves, self._sources, duplicates)

    def verify(self, candidate: Candidate) -> Verdict:
        report = self.report(candidate)
        passed = report.min_support >= UNSUPPORTED_BELOW and not report.duplicate_calls
        return Verdict(self.name, report.score, passed, () if passed else report.unsupported)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None  # the form verifiers judge unparseable answers; here an answer with no values


def _leaves(value: Any, schema: Any, path: str) -> Iterator[Leaf]:
    schema = schema if isinstance(schema, Mapping) else {}
    if isinstance(value, Mapping):
        if _in_schema(value, schema):
            yield Leaf(path, True, schema)  # a whole object given as the default: supported
            return
        properties = schema.get("properties") or {}
        for key, item in value.items():
            yield from _leaves(item, properties.get(key, {}), f"{path}.{key}")
    elif isinstance(value, list):
        if _in_schema(value, schema):
            yield Leaf(path, True, schema)
            return
        items = schema.get("items") or {}
        for index, item in enumerate(value):
            yield from _leaves(item, items, f"{path}[{index}]")
    else:
        yield Leaf(path, value, schema)


def _normalise(text: str) -> str:
    """Case-folded words of ``text`` (accents kept, punctuation and underscores dropped), one space apart."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def _numbers_in(text: str) -> Iterator[float]:
    """Numbers written in ``text``: digits (with thousands separators, percent, k/m/bn) and number words."""
    lowered = text.casefold()
    for match in _NUMBER.finditer(lowered):
        token = match.group(0).replace(",", "").replace(" ", "")
        percent = token.endswith("%")
        number = float(token.rstrip("%"))
        yield number
        if percent:
            yield number / 100
        suffix = re.match(r"\s*([a-z]+)", lowered[match.end():])
        if suffix and suffix.group(1) in _NUMBER_SUFFIXES:
            yield number * _NUMBER_SUFFIXES[suffix.group(1)]
        if suffix and suffix.group(1) == "percent":
            yield number / 100
    for word in _WORD.findall(lowered):
        if word in _NUMBER_WORDS:
            yield float(_NUMBER_WORDS[word])
