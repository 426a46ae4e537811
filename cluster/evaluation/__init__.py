"""Judging answers against BFCL: its cases as OpenAI requests (`bfcl`), calls read out of answers (`calls`), and
BFCL's AST checker rules (`scorer`). The benchmarks and adaptation's held-out replays both score with these."""
