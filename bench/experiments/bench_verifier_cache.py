"""What building a request's verifiers costs the first time a schema is seen and every time after.

The gateway checks a request's schemas and the cascade builds its verifiers from the same ones; compiled
validators are kept by the schema's JSON text (`policies/verifiers.py`). Prints the first build and the median
of the next --repeats builds, in ms, for a large response schema and a large tool list, each a fresh schema
for this process. A table, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from policies.verifiers import SchemaVerifier, validate_tool_schemas


def _ms(build: Callable[[], object]) -> float:
    started = time.perf_counter()
    build()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    marker = uuid.uuid4().hex  # a schema this process has not compiled yet
    fields = {f"p{i}": {"type": "string", "maxLength": 20, "description": marker} for i in range(48)}
    schema = {"type": "object", "properties": {f"o{j}": {"type": "object", "properties": fields} for j in range(38)}}
    tools = [{"type": "function", "function": {"name": f"f{k}", "description": marker, "parameters": {
        "type": "object", "properties": {f"a{i}": {"type": "integer"} for i in range(13)}}}} for k in range(100)]
    cases = {"response schema, 38 objects x 48 properties": lambda: SchemaVerifier(schema),
             "tools, 100 x 13 properties": lambda: validate_tool_schemas(tools)}
    print(f"{'case':<46} {'first ms':>9} {'again ms (median)':>18}")
    for name, build in cases.items():
        first = _ms(build)
        again = statistics.median(_ms(build) for _ in range(args.repeats))
        print(f"{name:<46} {first:>9.1f} {again:>18.1f}")


if __name__ == "__main__":
    main()
