"""Client-supplied regular expressions (JSON Schema ``pattern`` and ``patternProperties``), run by RE2.

The gateway matches client patterns against model output. Python's ``re`` backtracks, so a pattern like
``(a+)+$`` takes exponential time on a near miss (ReDoS). RE2 (google-re2) matches in time linear in the text
for every pattern it accepts, and refuses what would need backtracking: backreferences, look-around,
possessive quantifiers, atomic groups. So a pattern is safe when RE2 compiles it, and the verifiers match with
RE2 too (``linear_time``), never with ``re``. What is accepted, what is refused and why:
docs/json-schema-patterns.md.

JSON Schema patterns are ECMA-262. Before RE2 reads one, its ``\\uXXXX`` and ``\\u{X...}`` escapes become RE2's
``\\x{...}``; RE2 extensions that are not ECMA-262 and that XGrammar (which constrains decoding to the same
pattern) does not read the same way are refused. ``repeat_count`` is the one figure RE2 does not give: how far
counted repeats expand, which XGrammar's compile time follows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import re2
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

__all__ = ["UnsupportedPatternError", "compile_pattern", "linear_time", "repeat_count", "search"]

_MAX_MEM = 1 << 20  # RE2's memory budget for one compiled pattern (program and DFA cache); 8 MiB by default
_COMPILED_KEPT = 256  # compiled patterns kept per process: each takes kilobytes, at most _MAX_MEM


class UnsupportedPatternError(ValueError):
    """RE2 will not compile the pattern (or it is an RE2 extension refused here); the message says why."""


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = _MAX_MEM
    options.log_errors = False  # a refused client pattern is a 400, not a line in the replica's log
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=_COMPILED_KEPT)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (cached); raises ``UnsupportedPatternError`` saying what RE2 refused."""
    try:
        return re2.compile(_to_re2(pattern), _OPTIONS)
    except re2.error as exc:
        raise UnsupportedPatternError(_why(exc)) from None


def search(pattern: str, text: str) -> bool:
    """Does ``pattern`` match anywhere in ``text`` (JSON Schema's unanchored ``pattern``)? Linear in ``text``."""
    return compile_pattern(pattern).search(text) is not None


# --- ECMA-262 escapes ---------------------------------------------------------------------------------------

_ESCAPE = re2.compile(
    r"\\(?:u\{(?P<braced>[0-9A-Fa-f]+)\}"
    r"|u(?P<high>[dD][89abAB][0-9A-Fa-f]{2})\\u(?P<low>[dD][c-fC-F][0-9A-Fa-f]{2})"
    r"|u(?P<code>[0-9A-Fa-f]{4})|(?P<other>(?s:.)))",
    _OPTIONS,
)
_RE2_ONLY = ": an RE2 extension, not JSON Schema (ECMA-262) syntax, that the grammar decoder (XGrammar) does not read"
_UNICODE_CLASSES = (": Unicode property classes are not supported: RE2 and the grammar decoder (XGrammar) do not read "
                    "them as ECMA-262 does")
_REFUSED_ESCAPES = {  # escape letter -> why a pattern using it is refused
    "p": r"\p{...}" + _UNICODE_CLASSES, "P": r"\P{...}" + _UNICODE_CLASSES, "C": r"\C (any byte)" + _RE2_ONLY,
    "Q": r"\Q...\E quoting" + _RE2_ONLY, "E": r"\Q...\E quoting" + _RE2_ONLY,
    "z": r"\z (write $ for the end of the text)" + _RE2_ONLY,
}


def _to_re2(pattern: str) -> str:
    r"""``\uXXXX`` (a UTF-16 surrogate pair too) and ``\u{X...}`` as ``\x{...}``; RE2-only escapes refused."""

    def escape(match: Any) -> str:
        if match["braced"] is not None:
            return rf"\x{{{match['braced']}}}"
        if match["high"] is not None:
            code = 0x10000 + ((int(match["high"], 16) - 0xD800) << 10) + (int(match["low"], 16) - 0xDC00)
            return rf"\x{{{code:X}}}"
        if match["code"] is not None:
            return rf"\x{{{match['code']}}}"
        if match["other"] in _REFUSED_ESCAPES:
            raise UnsupportedPatternError(_REFUSED_ESCAPES[match["other"]])
        return match[0]

    return _ESCAPE.sub(escape, pattern)


_NEEDS_BACKTRACKING = {  # what RE2's "invalid perl operator: X" starts
    "(?=": "a look-ahead", "(?!": "a look-ahead", "(?<=": "a look-behind", "(?<!": "a look-behind",
    "(?>": "an atomic group", "(?P": "a named backreference or recursion",
}
_LINEAR = "RE2 matches in linear time, which rules it out"


def _why(error: re2.error) -> str:
    """RE2's error, saying what the refused construct is and why RE2 has none."""
    message = error.args[0] if error.args else "refused by RE2"
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    kind, _, found = text.partition(": ")
    if kind == "invalid perl operator" and found in _NEEDS_BACKTRACKING:
        return f"{_NEEDS_BACKTRACKING[found]} {found}...): {_LINEAR}"
    if kind == "invalid escape sequence" and found[1:2] in tuple("123456789k"):
        return f"a backreference {found}: {_LINEAR}"
    if kind == "bad repetition operator" and len(found) > 1 and found.endswith("+"):
        return f"a possessive quantifier {found}: {_LINEAR}"
    if kind == "invalid repetition size":
        return f"a counted repeat over 1000, nested counts multiplied ({found}): RE2's bound"
    if kind.startswith("pattern too large"):
        return f"the pattern compiles past RE2's memory budget of {_MAX_MEM >> 20} MiB"
    return f"{text} (RE2)"


# --- how far counted repeats expand -------------------------------------------------------------------------

_TOKEN = re2.compile(
    r"\\x\{[0-9A-Fa-f]*\}|\\(?s:.)"  # an escape
    r"|\[\^?\]?(?:\[:\^?[a-z]+:\]|\\x\{[0-9A-Fa-f]*\}|\\(?s:.)|[^\]])*\]"  # a set
    r"|(?P<flags>\(\?[a-zA-Z-]*\))"
    r"|(?P<open>\((?:\?P?<[^>]*>|\?[a-zA-Z-]*:)?)"
    r"|(?P<close>\))"
    r"|\{(?P<low>\d+)(?:,(?P<high>\d*))?\}\??"
    r"|(?P<repeat>[*+?])\??"
    r"|(?s:.)",
    _OPTIONS,
)


def repeat_count(pattern: str) -> int:
    """How many times the pattern's repeats expand their bodies: ``a{2,5}b+`` -> 5 + 1, ``(a{4}-){3}`` -> 3 x 4.

    Each quantifier counts its bound (``{n,m}`` m, ``{n,}`` and ``{n}`` n, ``?``, ``*`` and ``+`` 1, at least 1),
    times what its body counts when the body holds repeats of its own. Grammar-based decoders (XGrammar)
    expand counted repeats, nested ones multiplying, so this, not the pattern's length, is what their compile
    cost follows. A count RE2 reads as plain text (``{01}``, ``{99999999999}``) is counted all the same: the
    figure errs high, never low. Raises ``UnsupportedPatternError`` when RE2 refuses the pattern.
    """
    compile_pattern(pattern)  # a pattern RE2 accepts: its groups nest and its sets close
    sums = [0]  # what each open group counts so far, the whole pattern first
    last = 0  # what the token a quantifier would apply to counts
    for token in _TOKEN.finditer(_to_re2(pattern)):
        if token["open"] is not None:
            sums.append(0)
        elif token["close"] is not None:
            last = sums.pop()
            sums[-1] += last
        elif token["low"] is not None or token["repeat"] is not None:
            bound = 1 if token["repeat"] is not None else int(token["high"] or token["low"])  # {n,} counts n
            repeated = max(bound, 1) * max(last, 1)
            sums[-1] += repeated - last
            last = repeated
        elif token["flags"] is None:
            last = 0
    return sums[0]


# --- jsonschema, matching with RE2 --------------------------------------------------------------------------


@functools.cache
def linear_time(cls: type[Validator]) -> type[Validator]:
    """``cls`` with the keywords that match patterns (``pattern``, ``patternProperties``, ``additionalProperties``)
    matching with RE2, and a ``FORMAT_CHECKER`` whose ``regex`` format means "RE2 compiles it" (pass it to
    ``check_schema``). jsonschema's ``unevaluatedProperties`` still matches ``patternProperties`` with ``re``:
    ``schema_limits`` refuses that pair."""
    checker = FormatChecker(formats=())
    checker.checkers = {**cls.FORMAT_CHECKER.checkers, "regex": (_compiles, UnsupportedPatternError)}
    keywords = {"pattern": _pattern, "patternProperties": _pattern_properties,
                "additionalProperties": _additional_properties}
    return extend(cls, {k: v for k, v in keywords.items() if k in cls.VALIDATORS}, format_checker=checker)


def _compiles(instance: object) -> bool:
    if isinstance(instance, str):
        compile_pattern(instance)
    return True


def _pattern(validator: Validator, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Validator, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """jsonschema's own keyword, with the same messages; only the ``patternProperties`` match is RE2's."""
    if not validator.is_type(instance, "object"):
        return
    properties, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
    extras = sorted(
        (key for key in instance if key not in properties and not any(search(p, key) for p in patterns)), key=str
    )
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        joined = ", ".join(repr(extra) for extra in extras)
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(repr(pattern) for pattern in sorted(patterns))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({joined} {verb} unexpected)")
