"""Benchmarks of a running slm-cascade endpoint, as its clients see it.

- `bfcl`: BFCL single-turn cases as OpenAI requests; `scorer`: BFCL's AST checker rules; `calls`: reading
  calls out of answers;
- `runner`: one run per policy (slm-only, llm-only, cascade), records as JSONL; `report`, `plots`, `sweep`:
  report.json/.md, PNGs and the threshold sweep;
- `load`: a bounded loopback load generator; `simulated_llm`: an OpenAI-protocol stand-in LLM;
- `cli`: the `cascade bench` and `cascade simulate-llm` subcommands.

Nothing here imports Ray or vLLM, so the package runs and is tested without a cluster.
"""
