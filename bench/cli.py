"""`cascade bench ...` and `cascade simulate-llm`: argument parsing over bench's functions.

`register(commands)` adds both to the `cascade` parser. Each handler maps bench's own errors to a one-line
message and exit status 2, so an unreachable endpoint or an unknown category never prints a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

from bench.autoscale import ScalingTargetError
from bench.load import LoadError
from bench.runner import POLICIES, BenchError
from cluster.config import GatewayConfig
from cluster.evaluation.bfcl import CATEGORIES, BenchDataError, load_cases
from cluster.operations.confidence_fit import FitError
from cluster.operations.fault_injection import FaultInjectionError

__all__ = ["register"]

# The gateway's own defaults: a local `cascade up` of a config that does not move them.
DEFAULT_URL = f"http://{GatewayConfig.model_fields['host'].default}:{GatewayConfig.model_fields['port'].default}/v1"
_ERRORS = (BenchError, BenchDataError, LoadError, FaultInjectionError, ScalingTargetError, FitError)


def _say(message: str) -> None:
    print(f"cascade: {message}", file=sys.stderr, flush=True)


Handler = Callable[[argparse.Namespace], int]


def _guarded(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _ERRORS as error:
            _say(str(error))
            return 2
        except KeyboardInterrupt:
            _say("interrupted; partial results were kept")
            return 130
    return run


@_guarded
def _cmd_run(args: argparse.Namespace) -> int:
    from bench.runner import run_bench

    report = run_bench(args.url, args.category, args.limit, args.policies.split(","), args.concurrency, args.out,
                       guided=not args.no_guided, llm_tier=args.llm_tier, simulated_tiers=args.simulated_tier,
                       sweep_min_success_rate=args.min_success_rate if args.sweep_thresholds else None,
                       offset=args.offset, store=not args.no_store)
    for label, figures in report["policies"].items():
        print(f"{label:<24} n={figures['n']:<4} success={figures['success_rate']:.1%} cps={figures['cps']}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


@_guarded
def _cmd_confidence(args: argparse.Namespace) -> int:
    from bench.confidence_study import SimulatedFallback, run_study

    report = run_study(args.train, args.eval, args.out, fallback_runs=args.fallback_run,
                       simulated=SimulatedFallback(accuracy=args.simulated_accuracy), threshold=args.threshold)
    pooled = report["categories"]["pooled"]
    print(f"fitted on {', '.join(report['training']['categories'])}; evaluated on "
          f"{', '.join(c for c in report['categories'] if c != 'pooled')}")
    for category, entry in report["categories"].items():
        print(f"  {category:<18} n={entry['n']:<4} right={entry['right']:<4} AUROC fitted "
              f"{entry['auroc']['fitted']:.3f} (served before {entry['auroc']['served (before)']:.3f})  "
              f"APGR (simulated) {entry['simulated']['apgr']:.3f}")
    print(f"pooled CPS at 0.95x fallback / oracle's (simulated): {pooled['simulated']['cps_ratio_to_oracle']}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


@_guarded
def _cmd_features(args: argparse.Namespace) -> int:
    from bench.features import annotate_records

    for folder in args.out:
        print(f"{folder}: {annotate_records(folder)} answers' features replayed")
    return 0


@_guarded
def _cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    if not (Path(args.out) / "records.jsonl").exists():
        raise BenchError(f"no records.jsonl in {args.out}; run `cascade bench run --out {args.out}` first")
    write_report(args.out, args.min_success_rate if args.sweep_thresholds else None)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _replica_reader() -> Callable[[], dict[str, int]]:
    from cluster.operations.local import status

    def read() -> dict[str, int]:
        apps = status()["applications"].values()
        return {name: d["replicas"].get("RUNNING", 0) for app in apps for name, d in app["deployments"].items()}
    return read


@_guarded
def _cmd_load(args: argparse.Namespace) -> int:
    from bench.load import require_loopback, run_load
    from bench.runner import parse_policies, request_body

    require_loopback(args.url)
    policy = parse_policies([args.policy])[0]
    cases = load_cases(args.category, args.limit, offset=args.offset)
    bodies = [request_body(case, policy, guided=True) for case in cases]
    levels = [int(level) for level in args.concurrency.split(",")]
    headers = {"x-cascade-route": policy.route} if policy.route else {}
    report = asyncio.run(run_load(args.url, bodies, levels, args.requests, args.max_duration_s,
                                  _replica_reader() if args.watch_replicas else None, headers=headers))
    text = json.dumps(report.to_dict(), indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


@_guarded
def _cmd_throughput(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from bench.plots import plot_throughput
    from bench.throughput import format_table, run_throughput, to_json
    from cluster.config import load_config, tier_deployment_name

    config = load_config(args.config)
    tier = args.tier or config.vllm_tiers[0].name
    deployment = tier_deployment_name(tier)
    levels = [int(level) for level in args.concurrency.split(",")]
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)

    def replicas() -> int | None:
        app = serve.status().applications.get(config.app_name)
        state = app.deployments.get(deployment) if app is not None else None
        return None if state is None else state.replica_states.get("RUNNING", 0)

    try:
        handle = serve.get_deployment_handle(deployment, config.app_name)
        results = asyncio.run(run_throughput(
            args.url, handle, tier, levels, args.requests, args.max_tokens, replicas=replicas,
            on_level=lambda r: _say(f"concurrency {r.concurrency} {r.path}: {r.output_tokens_per_s:.1f} tokens/s")))
    finally:
        ray.shutdown()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = to_json(results, {"tier": tier, "max_tokens": args.max_tokens, "requests_per_level": args.requests})
    (out / "throughput.json").write_text(json.dumps(run, indent=2))
    print(format_table(results))
    print(f"plot: {plot_throughput(run, out / 'throughput.png')}")
    return 0


@_guarded
def _cmd_faults(args: argparse.Namespace) -> int:
    from functools import partial

    from bench.fault_recovery import LOAD_BODY, format_summary, run_fault
    from bench.plots import plot_fault_timeline
    from cluster.config import load_config, tier_deployment_name
    from cluster.operations.fault_injection import kill_engine, kill_replica

    config = load_config(args.config)
    deployment = tier_deployment_name(args.tier)
    inject = partial({"replica": kill_replica, "engine": kill_engine}[args.fault], config.app_name, deployment)
    run = asyncio.run(run_fault(args.url, LOAD_BODY, inject, fault=f"kill {args.fault} of {deployment}",
                                app=config.app_name, deployment=deployment, tier=args.tier,
                                concurrency=args.concurrency, before_s=args.before_s, after_s=args.after_s,
                                max_duration_s=args.max_duration_s, on_progress=_say))
    result = run.to_dict()
    _write_run(Path(args.out), "faults.json", result, format_summary, plot_fault_timeline, "fault_timeline.png")
    return 1 if result["summary"]["lost"] else 0


@_guarded
def _cmd_autoscale(args: argparse.Namespace) -> int:
    import ray

    from bench.autoscale import format_summary, run_autoscale, scaling_targets
    from bench.fault_recovery import LOAD_BODY
    from bench.plots import plot_autoscale_timeline
    from cluster.config import load_config, tier_deployment_name

    config = load_config(args.config)
    pool, targets = scaling_targets(config, args.tier)
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        run = asyncio.run(run_autoscale(args.url, LOAD_BODY, app=config.app_name,
                                        deployment=tier_deployment_name(args.tier), pool=pool, targets=targets,
                                        concurrency=args.concurrency, kill_a_node=args.kill_node,
                                        phase_timeout_s=args.phase_timeout_s, on_progress=_say))
    finally:
        ray.shutdown()
    result = run.to_dict()
    _write_run(Path(args.out), "autoscale.json", result, format_summary, plot_autoscale_timeline,
               "autoscale_timeline.png")
    summary = result["summary"]
    return 1 if summary["lost"] or not all(summary["reached"].values()) else 0


def _write_run(out: Path, json_name: str, result: dict, format_summary: Callable[[dict], str],
               plot: Callable[[dict, Path], Path], plot_name: str) -> None:
    """A harness run's JSON and timeline plot into `out`; its summary table to stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / json_name).write_text(json.dumps(result, indent=2))
    print(format_summary(result["summary"]))
    print(f"timeline: {plot(result, out / plot_name)}")


@_guarded
def _cmd_simulate(args: argparse.Namespace) -> int:
    from bench.simulated_llm import SimulatedLLM, serve

    cases = [case for category in args.category or ["simple_python"] for case in load_cases(category, args.limit)]
    try:
        sim = SimulatedLLM(cases, args.accuracy, args.seed, args.latency_median_ms, args.latency_sigma)
    except ValueError as error:
        raise BenchError(str(error)) from None
    _say(f"simulated LLM (figures are simulated) on http://{args.host}:{args.port}/v1, {len(cases)} cases, "
         f"accuracy {args.accuracy}")
    serve(sim, args.host, args.port)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"OpenAI base URL (default {DEFAULT_URL})")
    parser.add_argument("--category", default="simple_python", choices=list(CATEGORIES))
    parser.add_argument("--limit", type=int, help="first N cases (default: all)")
    parser.add_argument("--offset", type=int, default=0, help="skip the first N cases (disjoint splits)")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `bench {run,report,load}` and `simulate-llm` to the `cascade` command's subparsers."""
    bench = commands.add_parser("bench", help="BFCL tool-calling benchmark, threshold sweep, load test")
    actions = bench.add_subparsers(dest="action", required=True)

    run = actions.add_parser("run", help="send BFCL cases through each policy; write report.json/.md and plots")
    _common(run)
    run.add_argument("--policies", "--policy", default="slm-only,llm-only,cascade",
                     help=f"comma-separated, of {', '.join(POLICIES)}; cascade:ROUTE picks a route")
    run.add_argument("--concurrency", type=int, default=2)
    run.add_argument("--out", default="bench-out", help="folder for records.jsonl and the report")
    run.add_argument("--no-guided", action="store_true", help="tool_choice auto, tools described in the prompt")
    run.add_argument("--no-store", action="store_true",
                     help="send store: false, so no answer is recorded (evaluations)")
    run.add_argument("--llm-tier", default="fallback", help="tier the llm-only policy addresses")
    run.add_argument("--simulated-tier", action="append", default=[], help="tier served by simulate-llm (repeat)")
    run.add_argument("--sweep-thresholds", action="store_true", help="replay slm-only/llm-only through calibration")
    run.add_argument("--min-success-rate", type=float, default=0.0, help="floor for the calibrated point")
    run.set_defaults(run=_cmd_run)

    report = actions.add_parser("report", help="rebuild the report from an existing records.jsonl")
    report.add_argument("--out", default="bench-out")
    report.add_argument("--sweep-thresholds", action="store_true")
    report.add_argument("--min-success-rate", type=float, default=0.0)
    report.set_defaults(run=_cmd_report)

    confidence = actions.add_parser("confidence", help="fit the confidence model on training bench runs and report "
                                    "AUROC, APGR and CPS on evaluation runs (other categories)")
    confidence.add_argument("--train", nargs="+", required=True, metavar="DIR", help="slm-only bench folders to fit on")
    confidence.add_argument("--eval", nargs="+", required=True, metavar="DIR",
                            help="slm-only bench folders to report on")
    confidence.add_argument("--fallback-run", nargs="*", default=[], metavar="DIR",
                            help="llm-only bench folders of the real fallback on the evaluation cases")
    confidence.add_argument("--simulated-accuracy", type=float, default=0.9, help="the simulated fallback's accuracy")
    confidence.add_argument("--threshold", type=float, help="also report a route's operating point at this threshold")
    confidence.add_argument("--out", default="confidence-out")
    confidence.set_defaults(run=_cmd_confidence)

    features = actions.add_parser("features", help="replay each recorded answer's confidence features into its record")
    features.add_argument("out", nargs="+", metavar="DIR", help="bench folders (records.jsonl)")
    features.set_defaults(run=_cmd_features)

    load = actions.add_parser("load", help="bounded load test of a loopback endpoint at increasing concurrency")
    _common(load)
    load.add_argument("--policy", default="cascade", help="slm-only, llm-only, cascade or cascade:ROUTE")
    load.add_argument("--concurrency", default="1,2,4", help="comma-separated levels, run in order")
    load.add_argument("--requests", type=int, default=20, help="requests per level")
    load.add_argument("--max-duration-s", type=float, default=300.0, help="deadline for the whole run")
    load.add_argument("--watch-replicas", action="store_true", help="sample Ray Serve replica counts (cascade status)")
    load.add_argument("--out", help="also write the JSON here")
    load.set_defaults(run=_cmd_load)

    throughput = actions.add_parser("throughput", help="streamed throughput and time to first token at each "
                                    "concurrency, through the gateway and straight to the tier's replicas")
    throughput.add_argument("--url", default=DEFAULT_URL,
                            help=f"OpenAI base URL, loopback only (default {DEFAULT_URL})")
    throughput.add_argument("--config", help="config the cluster was started with (default: the embedded default)")
    throughput.add_argument("--tier", help="tier to load (default: the config's first vLLM tier)")
    throughput.add_argument("--concurrency", default="1,2,4,8,16", help="comma-separated levels, run in order")
    throughput.add_argument("--requests", type=int, default=8, help="requests per level and path (at least 2 x level)")
    throughput.add_argument("--max-tokens", type=int, default=32, help="tokens per answer (ignore_eos: exactly)")
    throughput.add_argument("--out", default="bench-out/throughput", help="folder for throughput.json and the plot")
    throughput.set_defaults(run=_cmd_throughput)

    faults = actions.add_parser("faults", help="fixed load on the local cluster while a replica or engine is killed")
    faults.add_argument("--url", default=DEFAULT_URL, help=f"OpenAI base URL, loopback only (default {DEFAULT_URL})")
    faults.add_argument("--config", help="config the cluster was started with (default: the embedded default)")
    faults.add_argument("--fault", choices=["replica", "engine"], default="replica",
                        help="SIGKILL the tier's replica process, or only the vLLM engine inside it")
    faults.add_argument("--tier", default="slm", help="vLLM tier whose replica is hit")
    faults.add_argument("--concurrency", type=int, default=4)
    faults.add_argument("--before-s", type=float, default=15.0, help="load before the fault")
    faults.add_argument("--after-s", type=float, default=15.0, help="load after the tier serves again")
    faults.add_argument("--max-duration-s", type=float, default=300.0, help="deadline for the whole run")
    faults.add_argument("--out", default="faults-out", help="folder for faults.json and fault_timeline.png")
    faults.set_defaults(run=_cmd_faults)

    autoscale = actions.add_parser("autoscale", help="load burst on a `cascade up --multinode` cluster: replicas "
                                   "and pool nodes up, a node killed (optional), then down; timeline and plot")
    autoscale.add_argument("--url", default=DEFAULT_URL, help=f"OpenAI base URL, loopback only (default {DEFAULT_URL})")
    autoscale.add_argument("--config", help="config the cluster was started with (default: the embedded default)")
    autoscale.add_argument("--tier", default="slm", help="vLLM tier whose replicas and pool are watched")
    autoscale.add_argument("--concurrency", type=int, default=6)
    autoscale.add_argument("--kill-node", action="store_true", help="once scaled out, SIGKILL a pool node that "
                           "holds a replica, under load")
    autoscale.add_argument("--phase-timeout-s", type=float, default=300.0, help="deadline of each phase")
    autoscale.add_argument("--out", default="autoscale-out", help="folder for autoscale.json and the timeline PNG")
    autoscale.set_defaults(run=_cmd_autoscale)

    simulate = commands.add_parser("simulate-llm", help="an OpenAI-protocol stand-in LLM answering BFCL cases")
    simulate.add_argument("--category", action="append", choices=list(CATEGORIES), help="repeatable")
    simulate.add_argument("--limit", type=int)
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8100)
    simulate.add_argument("--accuracy", type=float, default=0.9)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--latency-median-ms", type=float, default=300.0)
    simulate.add_argument("--latency-sigma", type=float, default=0.5, help="lognormal sigma of the latency")
    simulate.set_defaults(run=_cmd_simulate)
