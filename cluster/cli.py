"""`cascade`: the command line. Each subcommand is a thin shell over a function in cluster/."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from cluster.config import ConfigError, load_config
from cluster.local import ClusterError
from cluster.models import EMBEDDED_MODELS, ModelPreparationError


def _say(message: str) -> None:
    print(f"cascade: {message}", file=sys.stderr, flush=True)


def _cmd_up(args: argparse.Namespace) -> int:
    from cluster.local import up

    config = load_config(args.config)
    base_url = up(config, args.timeout_s, _say)
    print(f"slm-cascade is serving at {base_url}/v1 (models: cascade, {', '.join(t.name for t in config.tiers)})")
    return 0


def _cmd_down(_: argparse.Namespace) -> int:
    from cluster.local import down

    print("stopped" if down() else "nothing was running")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from cluster.local import status

    report = status()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for app_name, app in report["applications"].items():
        print(f"{app_name}: {app['status']}")
        for name, deployment in app["deployments"].items():
            replicas = ", ".join(f"{state}={count}" for state, count in deployment["replicas"].items()) or "none"
            print(f"  {name:<20} {deployment['status']:<10} replicas: {replicas}")
    return 0


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cluster.models import prepare_model

    steps = ["locating GGUF", "verifying GGUF checksum", "converting to safetensors", "writing manifest", "done"]
    for name in args.names or sorted(EMBEDDED_MODELS):
        with tqdm(total=len(steps), desc=name, unit="step", file=sys.stderr) as bar:

            def advance(step: str, bar: tqdm = bar) -> None:
                bar.set_postfix_str(step)
                bar.update(bar.total - bar.n if step in ("done", "already prepared") else 1)

            path = prepare_model(name, advance)
        print(f"{name}: {path}")
    return 0


def _cmd_models_list(_: argparse.Namespace) -> int:
    from cluster.models import is_prepared, model_dir

    for name in sorted(EMBEDDED_MODELS):
        state = "prepared" if is_prepared(name) else "not prepared"
        print(f"embedded:{name:<24} {state:<13} {model_dir(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cascade", description="SLM-first serving cluster for agentic workloads.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start a local Ray cluster and the Serve application")
    up.add_argument("--config", help="YAML config (default: the embedded default)")
    up.add_argument("--timeout-s", type=float, default=900.0, help="give up if not healthy by then")
    up.set_defaults(run=_cmd_up)

    commands.add_parser("down", help="stop the local cluster").set_defaults(run=_cmd_down)

    status = commands.add_parser("status", help="deployments and replicas of the running cluster")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_cmd_status)

    models = commands.add_parser("models", help="embedded model cache").add_subparsers(dest="action", required=True)
    prepare = models.add_parser("prepare", help="convert embedded GGUF models into the cache (idempotent)")
    prepare.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {sorted(EMBEDDED_MODELS)}")
    prepare.set_defaults(run=_cmd_models_prepare)
    models.add_parser("list", help="embedded models and whether they are prepared").set_defaults(run=_cmd_models_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, ClusterError, ModelPreparationError) as error:
        _say(str(error))
        return 2


if __name__ == "__main__":
    sys.exit(main())
