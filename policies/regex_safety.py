"""Will Python's backtracking ``re`` take exponential time on this pattern? A conservative static check.

The gateway runs client-supplied JSON Schema ``pattern``s with ``re`` (through jsonschema) on model
output, so a pattern like ``(a+)+`` is a denial of service (ReDoS): a backtracking engine blows up when
a repeated part can split the same text between its iterations in many ways, and ``(a+)+`` can cut
"aaaa" into 1+3, 2+2, 1+1+2, ... and tries every cut before failing.

The rule: a repeat (max > 1) is risky when, inside its body, a variable-width part can hand characters
to what follows it before a mandatory character it cannot match (reading the body cyclically, since
iteration i+1 follows iteration i), or when two alternatives can start alike. That rejects star height
> 1 (``(a+)+``, ``(a*)*``, ``(.*a){20}``), ``(a|aa)+`` and ``(\\w+\\s?)+``, and accepts delimited repeats
such as ``([a-z0-9-]+\\.)+`` and ``(-[a-z0-9]+)*`` that real hostname and slug patterns use. It is a
heuristic, not a proof: adjacent overlapping quantifiers outside any repeat (``.*a.*a.*a``) are
polynomial, not exponential, and are left to the caller's bound on pattern length.

Works on the parse tree of ``re``'s own parser, so it reads exactly the dialect jsonschema runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from re import _constants as sre  # the parser of Python's own regex dialect, which is what jsonschema runs
from re import _parser as sre_parse
from typing import Any, NamedTuple

__all__ = ["backtracking_risk", "repeat_count"]

_SPLITS = (
    "a repeated part can split the same text between its iterations in more than one way (nested or "
    "adjacent quantifiers over the same characters); end it with a character its inner quantifier cannot match"
)
_ALTERNATIVES = "two alternatives inside a repeat can start with the same character, so both are tried at every step"


def backtracking_risk(pattern: str) -> str | None:
    """Why ``pattern`` could backtrack catastrophically, or None when it cannot by this rule.

    Raises ``re.error`` when ``re`` rejects the pattern (including patterns too large or too deeply
    nested for its parser), so a caller has one exception to map to a client error.
    """
    return _shape(pattern).risk()


def repeat_count(pattern: str) -> int:
    """How many times the pattern's repeats expand their bodies: ``a{2,5}b+`` -> 5 + 1, ``(a{4}-){3}`` -> 3 x 4.

    Each quantifier counts its bound (``{n,m}`` m, ``{n,}`` n, ``?``, ``*`` and ``+`` 1, at least 1), times
    what its body counts when the body holds repeats of its own. Grammar-based decoders (xgrammar) expand
    counted repeats, nested ones multiplying, so this, not the pattern's length, is what their compile cost
    follows. Raises ``re.error`` like ``backtracking_risk``.
    """
    return _shape(pattern).repeat_count()


def _shape(pattern: str) -> _PatternShape:
    try:
        re.compile(pattern)  # some errors (variable-width look-behind) only show when compiling
        return _PatternShape(sre_parse.parse(pattern))
    except OverflowError as exc:  # a count past what re can store: a{99999999999}
        raise re.error(str(exc)) from exc
    except RecursionError as exc:  # Python's own regex parser recurses per group
        raise re.error("groups nested too deeply") from exc


_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
_Item = tuple[Any, Any]  # one (opcode, argument) node of re's parse tree


class _Chars(NamedTuple):
    """An over-approximated character set: exact over ASCII, one flag for all of the rest."""

    ascii: frozenset[int]
    other: bool

    def union(self, more: _Chars) -> _Chars:
        return _Chars(self.ascii | more.ascii, self.other or more.other)

    def overlaps(self, more: _Chars) -> bool:
        return bool(self.ascii & more.ascii) or (self.other and more.other)

    def complement(self) -> _Chars:
        return _Chars(_ASCII - self.ascii, True)


_ASCII = frozenset(range(128))
_NOTHING = _Chars(frozenset(), False)
_ANYTHING = _Chars(_ASCII, True)
_CATEGORIES = {
    category: _Chars(frozenset(c for c in _ASCII if re.fullmatch(escape, chr(c))), True)
    for category, escape in [
        (sre.CATEGORY_DIGIT, r"\d"), (sre.CATEGORY_NOT_DIGIT, r"\D"), (sre.CATEGORY_SPACE, r"\s"),
        (sre.CATEGORY_NOT_SPACE, r"\S"), (sre.CATEGORY_WORD, r"\w"), (sre.CATEGORY_NOT_WORD, r"\W"),
    ]
}


class _PatternShape:
    """Character sets and widths of the nodes of one parsed pattern, for the rule in the module docstring.

    Per-node results are memoised by node identity (the tree outlives the analysis), so the whole
    analysis stays roughly linear in the pattern even when repeats nest.
    """

    def __init__(self, tree: sre_parse.SubPattern) -> None:
        self._tree = tree
        self._items = list(_nodes(tree))
        self._ignorecase = bool(tree.state.flags & re.IGNORECASE) or any(
            op is sre.SUBPATTERN and av[1] & re.IGNORECASE for op, av in self._items
        )
        self._widths: dict[int, tuple[int, int]] = {}
        self._firsts: dict[int, _Chars] = {}
        self._chars: dict[int, _Chars] = {}
        self._expansions: dict[int, int] = {}
        for item in reversed(self._items):  # descendants come after their ancestors in ``_nodes`` order
            self._chars[id(item)] = self._all_chars(item)
            self._expansions[id(item)] = self._expansion(item)

    def repeat_count(self) -> int:
        return sum(self._expansions[id(item)] for item in self._tree)

    def risk(self) -> str | None:
        bodies = [av[2] for op, av in self._items if op in _REPEATS and av[1] > 1]
        if any(self._ambiguous(body) for body in bodies):
            return _SPLITS
        if self._overlapping_repeated_branch():
            return _ALTERNATIVES
        return None

    def _ambiguous(self, body: Sequence[_Item]) -> bool:
        items = _flatten(body)
        return any(self._variable(item) and not self._pinned(items, i) for i, item in enumerate(items))

    def _pinned(self, items: list[_Item], i: int) -> bool:
        """Does a mandatory character that ``items[i]`` cannot match follow it before anything it could?"""
        absorbed = self._chars[id(items[i])]
        for step in range(1, len(items) + 1):
            follower = items[(i + step) % len(items)]
            if self._first_of(follower).overlaps(absorbed):
                return False
            if self._width(follower)[0] > 0:
                return True
        return False

    def _overlapping_repeated_branch(self) -> bool:
        """Two alternatives that can start alike, inside a repeat: (ab|a.)+ tries both at every step."""
        stack: list[tuple[Sequence[_Item], bool]] = [(self._tree, False)]
        while stack:
            sequence, repeated = stack.pop()
            for op, av in sequence:
                if repeated and op is sre.BRANCH:
                    seen = _NOTHING
                    for alternative in av[1]:
                        first = self._first(alternative)
                        if first.overlaps(seen):
                            return True
                        seen = seen.union(first)
                inside = repeated or (op in _REPEATS and av[1] > 1)
                stack.extend((child, inside) for child in _children(op, av))
        return False

    def _variable(self, item: _Item) -> bool:
        low, high = self._width(item)
        return low != high

    def _width(self, item: _Item) -> tuple[int, int]:
        if id(item) not in self._widths:
            self._widths[id(item)] = sre_parse.SubPattern(self._tree.state, [item]).getwidth()
        return self._widths[id(item)]

    def _first(self, sequence: Sequence[_Item]) -> _Chars:
        """Characters a match of ``sequence`` can start with."""
        chars = _NOTHING
        for item in sequence:
            chars = chars.union(self._first_of(item))
            if self._width(item)[0] > 0:
                break
        return chars

    def _first_of(self, item: _Item) -> _Chars:
        if id(item) not in self._firsts:
            op, av = item
            if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
                first = _ANYTHING
            elif op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
                first = _NOTHING  # zero-width
            elif op is sre.BRANCH:
                first = _NOTHING
                for alternative in av[1]:
                    first = first.union(self._first(alternative))
            else:
                children = _children(op, av)
                first = self._first(children[0]) if children else self._leaf(op, av)
            self._firsts[id(item)] = first
        return self._firsts[id(item)]

    def _expansion(self, item: _Item) -> int:
        """``repeat_count`` of one node (its descendants are already done)."""
        op, av = item
        inner = sum(self._expansions[id(child)] for sequence in _children(op, av) for child in sequence)
        if op not in _REPEATS:
            return inner
        bound = av[1] if av[1] != sre.MAXREPEAT else av[0]
        return max(bound, 1) * max(inner, 1)

    def _all_chars(self, item: _Item) -> _Chars:
        """Every character a match of ``item`` can contain (its descendants are already done)."""
        op, av = item
        if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            return _ANYTHING
        children = _children(op, av)
        if not children:
            return self._leaf(op, av)
        chars = _NOTHING
        for sequence in children:
            for child in sequence:
                chars = chars.union(self._chars[id(child)])
        return chars

    def _leaf(self, op: Any, av: Any) -> _Chars:
        if op is sre.LITERAL:
            return self._literal(av)
        if op is sre.NOT_LITERAL:
            return self._literal(av).complement()
        if op is sre.IN:
            chars, negate = _NOTHING, False
            for member_op, member in av:
                if member_op is sre.NEGATE:
                    negate = True
                elif member_op is sre.LITERAL:
                    chars = chars.union(self._literal(member))
                elif member_op is sre.RANGE:
                    low, high = member
                    chars = chars.union(self._codes(range(low, min(high, 127) + 1), high > 127))
                else:
                    chars = chars.union(_CATEGORIES.get(member, _ANYTHING))
            return chars.complement() if negate else chars
        if op is sre.ANY:
            return _ANYTHING
        return _NOTHING  # zero-width (AT and friends)

    def _literal(self, code: int) -> _Chars:
        return self._codes([code] if code < 128 else [], code >= 128)

    def _codes(self, codes: Iterable[int], other: bool) -> _Chars:
        """ASCII codes as a set; under IGNORECASE a letter also stands for its other case and for
        some non-ASCII letters (the Kelvin sign matches 'k')."""
        ascii = frozenset(codes)
        letters = {c for c in ascii if chr(c).isalpha()}
        if self._ignorecase and letters:
            return _Chars(ascii | {ord(chr(c).swapcase()) for c in letters}, True)
        return _Chars(ascii, other)


def _children(op: Any, av: Any) -> list[Sequence[_Item]]:
    """The sub-sequences nested in one parse node (none for a leaf)."""
    if op is sre.SUBPATTERN:
        return [av[3]]
    if op is sre.ATOMIC_GROUP:
        return [av]
    if op is sre.BRANCH:
        return list(av[1])
    if op in _REPEATS:
        return [av[2]]
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [av[1]]
    if op is sre.GROUPREF_EXISTS:
        return [av[1]] + ([av[2]] if av[2] is not None else [])
    return []


def _nodes(items: Sequence[_Item]) -> Iterator[_Item]:
    """Every node under ``items``, iteratively."""
    stack = [items]
    while stack:
        for item in stack.pop():
            yield item  # the tree's own tuple: its id() keys the memo tables
            stack.extend(_children(*item))


def _flatten(items: Sequence[_Item]) -> list[_Item]:
    """``items`` with plain groups opened up: ``(ab)c`` reads as the sequence ``a b c``."""
    flat: list[_Item] = []
    stack = [iter(items)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif item[0] in (sre.SUBPATTERN, sre.ATOMIC_GROUP):
            stack.append(iter(_children(*item)[0]))
        else:
            flat.append(item)
    return flat
