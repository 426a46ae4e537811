"""One-off measurements behind the README's and docs' figures; each is a script run as `python -m
bench.experiments.NAME` (or by path) with its own `--help`, and prints the figures it writes."""
