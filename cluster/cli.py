"""`cascade`: the command line. Each subcommand is a thin shell over a function in cluster/."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.cli import register as register_bench_commands
from cluster.adaptation.dataset import HELD_OUT_FRACTION
from cluster.adaptation.train import TrainSettings
from cluster.config import DEFAULT_ROUTE, ApiKeyConfig, ConfigError, load_config
from cluster.operations.accounting_report import ReportError
from cluster.operations.adaptation_client import (
    AdaptError,
    adaptation_status,
    format_round,
    format_status,
    promote,
    request_round,
    roll_back,
)
from cluster.operations.calibrate_route import CalibrateError
from cluster.operations.k8s import K8sError
from cluster.operations.local import ClusterError
from cluster.operations.render import RenderError
from cluster.store.models import EMBEDDED_MODELS, ModelPreparationError
from cluster.store.recording import RecordingError


def _say(message: str) -> None:
    print(f"cascade: {message}", file=sys.stderr, flush=True)


def _cmd_up(args: argparse.Namespace) -> int:
    from cluster.operations.local import up

    config = load_config(args.config)
    base_url = up(config, args.timeout_s, _say, multinode=args.multinode)
    print(f"slm-cascade is serving at {base_url}/v1 (models: cascade, {', '.join(t.name for t in config.tiers)})")
    return 0


def _cmd_down(_: argparse.Namespace) -> int:
    from cluster.operations.local import down

    print("stopped" if down() else "nothing was running")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from cluster.operations.local import status

    report = status()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for app_name, app in report["applications"].items():
        print(f"{app_name}: {app['status']}")
        for name, deployment in app["deployments"].items():
            replicas = ", ".join(f"{state}={count}" for state, count in deployment["replicas"].items()) or "none"
            print(f"  {name:<20} {deployment['status']:<10} replicas: {replicas}")
    print("nodes:")
    for node in report["nodes"]:
        replicas = ", ".join(f"{name}={count}" for name, count in node["replicas"].items()) or "none"
        print(f"  {node['node_id'][-12:]:<14} {node['type']:<12} {'alive' if node['alive'] else 'dead':<6} "
              f"replicas: {replicas}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from cluster.operations.calibrate_route import CalibrateError, run_calibrate, run_fit

    if args.min_success_rate is not None:
        if args.fit or args.target_error is not None or len(args.data) != 1:
            raise CalibrateError("--min-success-rate reads one outcomes file and goes alone; --fit and "
                                 "--target-error are a separate use")
        print(run_calibrate(args.data[0], args.min_success_rate, as_json=args.json))
        return 0
    print(run_fit(args.data, fit=args.fit, labels=args.labels, holdout_categories=args.holdout_categories,
                  target_error=args.target_error, delta=args.delta, config_path=args.config, route=args.route))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cluster.operations.accounting_report import fetch_report, format_table, plot_report

    config = load_config(args.config)
    report = fetch_report(args.url or f"http://{config.gateway.host}:{config.gateway.port}")
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    if args.plot:
        print(f"plot: {plot_report(report, args.plot)}", file=sys.stderr)
    return 0


def _cmd_adapt_run(args: argparse.Namespace) -> int:
    try:
        settings = TrainSettings(epochs=args.epochs, rank=args.rank, learning_rate=args.learning_rate)
    except ValueError as error:
        raise AdaptError(str(error)) from None
    round_ = request_round(Path(args.config), args.route, settings, held_out_fraction=args.held_out,
                           promote=not args.no_promote, wait=not args.detach, progress=_say)
    print(format_round(round_))
    return 1 if round_["state"] == "failed" else 0


def _cmd_adapt_status(args: argparse.Namespace) -> int:
    status = adaptation_status(Path(args.config), args.route)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _cmd_adapt_rollback(args: argparse.Namespace) -> int:
    result = roll_back(Path(args.config), args.route, args.reason)
    now = result["serving"]["adapter"] if result["serving"] else "the config's adapter (or none)"
    print(f"route {args.route}: {result['rolled_back']['adapter']} rolled back; now serving {now}")
    return 0


def _cmd_adapt_promote(args: argparse.Namespace) -> int:
    version = promote(Path(args.config), args.route, args.adapter, args.reason)
    print(f"route {args.route}: now serving {version['adapter']} (v{version['version']})")
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    import yaml

    from policies.access import generate_api_key, hash_api_key

    token = generate_api_key()
    entry: dict = {"name": args.name, "sha256": hash_api_key(token)}
    if args.routes:
        entry["routes"] = args.routes.split(",")
    if args.direct_tiers:
        entry["direct_tiers"] = True
    if args.requests_per_minute is not None:
        entry |= {"requests_per_minute": args.requests_per_minute, "burst": args.burst}
    print(token)  # stdout carries only the token, so `KEY=$(cascade keys create ...)` works
    _say("this token is shown once; store it in your secret manager. Add this entry to gateway.auth.keys:\n"
         + yaml.safe_dump([entry], sort_keys=False))
    return 0


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cluster.store.models import prepare_model

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
    from cluster.store.models import is_prepared, model_dir

    for name in sorted(EMBEDDED_MODELS):
        state = "prepared" if is_prepared(name) else "not prepared"
        print(f"embedded:{name:<24} {state:<13} {model_dir(name)}")
    return 0


def _cmd_render_serve_config(args: argparse.Namespace) -> int:
    from cluster.operations.render import load_values, serve_config_text, values_config

    config = values_config(load_values(args.values), args.values) if args.values else load_config(args.config)
    print(serve_config_text(config), end="")
    return 0


def _cmd_render_worker_groups(args: argparse.Namespace) -> int:
    import yaml

    from cluster.config.node_types import helm_worker_groups

    print(yaml.safe_dump({"workerGroups": helm_worker_groups(load_config(args.config))}, sort_keys=False), end="")
    return 0


def _cmd_render_chart(args: argparse.Namespace) -> int:
    from cluster.operations.render import render_chart_text

    print(render_chart_text(args.values, release=args.release, namespace=args.namespace), end="")
    return 0


def _cmd_k8s_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from cluster.operations.k8s import format_status, get_status

    status = get_status(args.name, args.namespace, kubeconfig=args.kubeconfig, context=args.context)
    print(json.dumps(asdict(status), indent=2) if args.json else format_status(status))
    return 0 if status.running else 1


def _cmd_k8s_wait(args: argparse.Namespace) -> int:
    from cluster.operations.k8s import format_status, wait_ready

    def on_poll(status) -> None:
        _say(f"{status.service_status or 'pending'}: " + ", ".join(f"{a.name}={a.status}" for a in status.applications))

    status = wait_ready(args.name, args.namespace, timeout_s=args.timeout_s, kubeconfig=args.kubeconfig,
                        context=args.context, on_poll=on_poll)
    print(format_status(status))
    return 0


def _add_render_commands(commands: argparse._SubParsersAction) -> None:
    render = commands.add_parser("render", help="print what Kubernetes runs").add_subparsers(dest="what", required=True)
    serve_cfg = render.add_parser("serve-config", help="the RayService serveConfigV2 for a config (YAML)")
    source = serve_cfg.add_mutually_exclusive_group()
    source.add_argument("--config", help="YAML config (default: the embedded default)")
    source.add_argument("--values", help="a Helm values file: its `cascade:` key")
    serve_cfg.set_defaults(run=_cmd_render_serve_config)
    groups = render.add_parser("worker-groups", help="the chart's workerGroups for the config's pools (YAML to "
                               "merge into your values; add pod sizes and node selectors)")
    groups.add_argument("--config", help="YAML config (default: the embedded default)")
    groups.set_defaults(run=_cmd_render_worker_groups)
    chart = render.add_parser("chart", help="the Helm chart's manifests, rendered by Helm (multi-document YAML)")
    chart.add_argument("--values", help="Helm values file (default: the chart's values.yaml)")
    chart.add_argument("--release", default="slm-cascade")
    chart.add_argument("--namespace", default="default")
    chart.set_defaults(run=_cmd_render_chart)


def _add_k8s_commands(commands: argparse._SubParsersAction) -> None:
    k8s = commands.add_parser("k8s", help="the RayService in Kubernetes").add_subparsers(dest="action", required=True)
    for action, help_text, run in (("status", "RayService and Serve application status", _cmd_k8s_status),
                                   ("wait", "wait until the Serve application is RUNNING", _cmd_k8s_wait)):
        sub = k8s.add_parser(action, help=help_text)
        sub.add_argument("--name", default="slm-cascade", help="RayService name (the chart's fullname)")
        sub.add_argument("--namespace", default="default")
        sub.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, else in-cluster")
        sub.add_argument("--context")
        sub.set_defaults(run=run)
    k8s.choices["status"].add_argument("--json", action="store_true")
    k8s.choices["wait"].add_argument("--timeout-s", type=float, default=1800.0)


def _add_adapt_command(commands: argparse._SubParsersAction) -> None:
    defaults = TrainSettings()
    adapt = commands.add_parser("adapt", help="adaptation rounds: LoRA adapters of a route's SLM trained on its "
                                "recorded escalations, on the cluster").add_subparsers(dest="action", required=True)
    run = adapt.add_parser("run", help="run a round on the cluster: train, replay held-out and regression requests, "
                           "promote the candidate only if it wins")
    run.add_argument("--config", required=True, help="the running cluster's YAML config")
    run.add_argument("--route", required=True, help="route whose recorded examples train the adapter")
    run.add_argument("--epochs", type=int, default=defaults.epochs)
    run.add_argument("--rank", type=int, default=defaults.rank, help="LoRA rank (at most the tier's max_lora_rank)")
    run.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    run.add_argument("--held-out", type=float, default=HELD_OUT_FRACTION, metavar="F",
                     help="share of the examples kept out of training to judge the adapter")
    run.add_argument("--no-promote", action="store_true", help="decide and report, but keep the serving adapter")
    run.add_argument("--detach", action="store_true", help="start the round and return; `adapt status` follows it")
    run.set_defaults(run=_cmd_adapt_run)
    status = adapt.add_parser("status", help="each route's adapter versions and the latest rounds")
    status.add_argument("--config", required=True, help="the running cluster's YAML config")
    status.add_argument("--route", help="only this route")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_cmd_adapt_status)
    rollback = adapt.add_parser("rollback", help="take the route's serving adapter version out of service; the "
                                "previous one serves again, without a restart")
    rollback.add_argument("--config", required=True, help="the running cluster's YAML config")
    rollback.add_argument("--route", required=True)
    rollback.add_argument("--reason", default="by command", help="recorded in the ledger")
    rollback.set_defaults(run=_cmd_adapt_rollback)
    again = adapt.add_parser("promote", help="serve an adapter version of the route's ledger again (after a "
                             "rollback); watched like any promotion")
    again.add_argument("--config", required=True, help="the running cluster's YAML config")
    again.add_argument("--route", required=True)
    again.add_argument("--adapter", required=True, help="an adapter the route's ledger lists (`adapt status`)")
    again.add_argument("--reason", default="by command", help="recorded in the ledger")
    again.set_defaults(run=_cmd_adapt_promote)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cascade", description="SLM-first serving cluster for agentic workloads.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start a local Ray cluster and the Serve application")
    up.add_argument("--config", help="YAML config (default: the embedded default)")
    up.add_argument("--timeout-s", type=float, default=900.0, help="give up if not healthy by then")
    up.add_argument("--multinode", action="store_true", help="a head plus autoscaled worker nodes on this machine, "
                    "one node type per pool (the config's `multinode` section)")
    up.set_defaults(run=_cmd_up)

    commands.add_parser("down", help="stop the local cluster").set_defaults(run=_cmd_down)

    status = commands.add_parser("status", help="deployments and replicas of the running cluster")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_cmd_status)

    calibrate = commands.add_parser("calibrate", help="fit a route's confidence model, certify or choose its threshold")
    calibrate.add_argument("--data", required=True, nargs="+", metavar="FILE",
                           help="labelled answers (bench records.jsonl), or one outcomes file with --min-success-rate")
    calibrate.add_argument("--min-success-rate", type=float, help="lowest-CPS threshold above this success floor")
    calibrate.add_argument("--json", action="store_true", help="with --min-success-rate: print the curve as JSON")
    calibrate.add_argument("--fit", action="store_true", help="fit the confidence model (logistic regression)")
    calibrate.add_argument("--labels", metavar="FILE", help="success labels joined on case_id (feedback, a grader)")
    calibrate.add_argument("--holdout-categories", type=lambda text: [c for c in text.split(",") if c], default=[],
                           metavar="A,B", help="evaluate on these categories (default: a fixed quarter of the cases)")
    calibrate.add_argument("--target-error", type=float,
                           help="certify the lowest threshold with accepted error <= this")
    calibrate.add_argument("--delta", type=float, default=0.05, help="the certificate holds with probability 1-delta")
    calibrate.add_argument("--config", help="write the model and threshold into this config file")
    calibrate.add_argument("--route", default=DEFAULT_ROUTE, help=f"the route to write (default: {DEFAULT_ROUTE})")
    calibrate.set_defaults(run=_cmd_calibrate)

    report = commands.add_parser("report", help="CPS, validity, latency and energy from the running gateway")
    report.add_argument("--config", help="config the cluster was started with (for its address)")
    report.add_argument("--url", help="gateway base URL (default: from the config)")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--plot", type=Path, metavar="PNG", help="also write cost and latency plots")
    report.set_defaults(run=_cmd_report)

    _add_adapt_command(commands)

    keys = commands.add_parser("keys", help="gateway API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="print a new bearer token and its config entry (only the digest is kept)")
    create.add_argument("--name", required=True, help="who holds the key")
    create.add_argument("--routes", help="comma-separated routes the key may use (default: all)")
    create.add_argument("--direct-tiers", action="store_true", help="may address tiers by name")
    create.add_argument("--requests-per-minute", type=float, help="rate limit per gateway replica")
    create.add_argument("--burst", type=int, default=ApiKeyConfig.model_fields["burst"].default,
                        help="requests allowed at once before the rate applies")
    create.set_defaults(run=_cmd_keys_create)

    models = commands.add_parser("models", help="embedded model cache").add_subparsers(dest="action", required=True)
    prepare = models.add_parser("prepare", help="convert embedded GGUF models into the cache (idempotent)")
    prepare.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {sorted(EMBEDDED_MODELS)}")
    prepare.set_defaults(run=_cmd_models_prepare)
    models.add_parser("list", help="embedded models and whether they are prepared").set_defaults(run=_cmd_models_list)
    _add_render_commands(commands)
    _add_k8s_commands(commands)
    register_bench_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, ClusterError, ModelPreparationError, CalibrateError, ReportError, RenderError,
            K8sError, AdaptError, RecordingError) as error:
        _say(str(error))
        return 2


if __name__ == "__main__":
    sys.exit(main())
