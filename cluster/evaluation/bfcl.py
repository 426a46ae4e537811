"""BFCL single-turn cases as OpenAI chat requests, with their ground truth.

The Berkeley Function Calling Leaderboard ships JSON-lines question files (`BFCL_v4_<category>.json`: an id,
a conversation, function docs in its own dialect) and `possible_answer/` files with, per expected call, the
acceptable values of each argument. Function docs use Python-ish types ("dict", "float", "tuple", "any");
they are converted the way BFCL's own OpenAI handler converts them (`model_handler/utils.py`,
`GORILLA_TO_OPENAPI`), so the scorer's type rules and the schema the model sees agree: "any" becomes
"string" there, and here too. Two repairs BFCL does not make, because a grammar-constrained decoder needs a
satisfiable schema: `enum` values that contradict the declared type are dropped (e.g. "True" on a boolean),
and `required` names missing from `properties` are dropped from the schema (not from the scorer's doc).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CATEGORIES", "BenchDataError", "Case", "data_dir", "load_cases", "to_openai_tool"]

# category -> how BFCL checks it: "simple" (exactly one call), "multiple" (one call, several tools on
# offer), "parallel" (several calls, any order), "irrelevance" (no call is the right answer).
CATEGORIES: dict[str, str] = {
    "simple_python": "simple",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel",
    "live_simple": "simple",
    "live_multiple": "multiple",
    "live_parallel": "parallel",
    "live_parallel_multiple": "parallel",
    "irrelevance": "irrelevance",
    "live_irrelevance": "irrelevance",
}

_TYPES = {"string": "string", "integer": "integer", "float": "number", "number": "number", "boolean": "boolean",
          "bool": "boolean", "array": "array", "list": "array", "tuple": "array", "dict": "object",
          "object": "object", "any": "string"}
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                              "boolean": (bool,), "array": (list,), "object": (dict,)}
_DROPPED_KEYS = ("optional",)  # BFCL annotations that are not JSON Schema


class BenchDataError(ValueError):
    """Unknown category, missing or empty data files; the message names what is known."""


@dataclass(frozen=True)
class Case:
    """One benchmark case: what to send and what counts as right."""

    id: str
    category: str
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]  # BFCL's own docs: the scorer reads types and `required` from these
    tools: list[dict[str, Any]]  # the same as OpenAI tools (JSON Schema)
    ground_truth: list[dict[str, dict[str, list[Any]]]] | None  # None: irrelevance, no call expected

    @property
    def checker(self) -> str:
        return CATEGORIES[self.category]

    @property
    def expects_calls(self) -> bool:
        return self.checker != "irrelevance"

    @property
    def parallel(self) -> bool:
        return self.checker == "parallel"


def data_dir() -> Path:
    """The data folder of the installed `bfcl-eval` package (found without importing it: its imports need
    packages this project does not install)."""
    import importlib.util

    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BenchDataError("package bfcl-eval is not installed (pip install --no-deps bfcl-eval)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _json_schema(doc: Any) -> Any:
    """One BFCL parameter doc as JSON Schema (recursively)."""
    if not isinstance(doc, dict):
        return doc
    schema = {k: copy.deepcopy(v) for k, v in doc.items() if k not in _DROPPED_KEYS}
    if "type" in schema:
        schema["type"] = _TYPES.get(str(schema["type"]), "string")
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = {name: _json_schema(sub) for name, sub in schema["properties"].items()}
        if isinstance(schema.get("required"), list):
            schema["required"] = [name for name in schema["required"] if name in schema["properties"]]
    if isinstance(schema.get("items"), dict):
        schema["items"] = _json_schema(schema["items"])
    if isinstance(schema.get("enum"), list) and schema.get("type") in _PYTHON_TYPES:
        allowed = _PYTHON_TYPES[schema["type"]]
        kept = [v for v in schema["enum"]
                if isinstance(v, allowed) and not (isinstance(v, bool) and bool not in allowed)]
        if kept:
            schema["enum"] = kept
        else:
            del schema["enum"]
    return schema


def to_openai_tool(function: dict[str, Any]) -> dict[str, Any]:
    """A BFCL function doc as an OpenAI `tools` entry."""
    parameters = _json_schema(function.get("parameters") or {"type": "dict", "properties": {}})
    parameters["type"] = "object"
    parameters.setdefault("properties", {})
    return {"type": "function", "function": {"name": function["name"],
                                             "description": function.get("description", ""),
                                             "parameters": parameters}}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]
    except OSError as error:
        raise BenchDataError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise BenchDataError(f"{path} is not JSON lines: {error}") from None


def _find(folder: Path, category: str) -> Path:
    """The newest BFCL version's file of exactly this category (`irrelevance` is not `live_irrelevance`)."""
    pattern = re.compile(rf"BFCL_v(\d+)_{re.escape(category)}\.json")
    versions = {int(m.group(1)): path for path in folder.glob("BFCL_v*.json") if (m := pattern.fullmatch(path.name))}
    if not versions:
        raise BenchDataError(f"no BFCL file for category {category!r} in {folder}")
    return versions[max(versions)]


def load_cases(category: str, limit: int | None = None, folder: Path | None = None, offset: int = 0) -> list[Case]:
    """`limit` cases of a category (all when None) from position `offset`, in file order.

    Disjoint offsets give disjoint splits: e.g. traffic to learn from and cases to measure on.
    """
    if offset < 0:
        raise BenchDataError(f"offset must be at least 0, got {offset}")
    if category not in CATEGORIES:
        raise BenchDataError(f"unknown BFCL category {category!r}; known: {', '.join(CATEGORIES)}")
    if limit is not None and limit < 1:
        raise BenchDataError(f"limit must be at least 1, got {limit}")
    folder = folder or data_dir()
    questions = _read_jsonl(_find(folder, category))
    if not questions:
        raise BenchDataError(f"category {category!r} has no cases in {folder}; known: {', '.join(CATEGORIES)}")
    answers: dict[str, Any] = {}
    if CATEGORIES[category] != "irrelevance":
        answers = {row["id"]: row["ground_truth"] for row in _read_jsonl(_find(folder / "possible_answer", category))}
    cases = []
    for row in questions[offset:None if limit is None else offset + limit]:
        if row["id"] not in answers and CATEGORIES[category] != "irrelevance":
            raise BenchDataError(f"case {row['id']!r} has no possible answer in {folder / 'possible_answer'}")
        cases.append(Case(
            id=row["id"], category=category, messages=list(row["question"][0]), functions=row["function"],
            tools=[to_openai_tool(f) for f in row["function"]], ground_truth=answers.get(row["id"]),
        ))
    return cases
