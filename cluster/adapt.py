"""`cascade adapt`: distil a route's escalated traffic into a LoRA adapter of its SLM, and keep it only if it wins.

The recorded examples (verified answers of a tier above the SLM) are split by a stable hash of their ids; the
SLM is fine-tuned on one part, and the other part is replayed over HTTP against the running cluster, once to
what the route serves now and once to the candidate adapter (`<tier>:<adapter>`, which the gateway answers with
that tier alone). An answer counts when it matches the recorded one: tool calls by the BFCL benchmark's AST
rules, JSON answers by equality (cluster/adaptation/success.py). `policies.promotion` then decides; only a promoted adapter is written into the
config (`routes[route].adapter`) and applied, which restarts the gateway alone, since only its arguments change.
The adapter is written into the tier's `lora.adapter_dir`, where replicas find it without a restart, so the
candidate is served before it is promoted; a refused one stays there for inspection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from cluster.adaptation.dataset import (
    MINIMUM_HELD_OUT,
    TrainingPair,
    build_pairs,
    require_minimum,
    split_held_out,
)
from cluster.adaptation.success import answer_matches
from cluster.adaptation.train import TrainSettings, TrainSummary, train_lora
from cluster.client_auth import API_KEY_ENV, auth_headers
from cluster.config import (
    ADAPTER_NAME_PATTERN,
    CascadeConfig,
    RouteConfig,
    TierConfig,
    load_config,
)
from cluster.config_edit import write_route_fields
from cluster.local import ClusterError, running_multinode, up
from cluster.models import resolve_model
from cluster.recording import CONTRACT_FIELDS, RecordedExample, RecordingStore, recording_path
from policies.promotion import HeldOutResult, PromotionDecision, decide_promotion

__all__ = ["AdaptError", "AdaptResult", "adapter_name", "format_adapt_result", "replay_body", "run_adapt"]

REPLAY_MAX_TOKENS = 256
_ROUTE_PREFIX_CHARS = 25  # + "-YYYYmmddtHHMMSS" (16) stays within the adapter name's 41 characters
# Replies that say nothing about the model: the whole evaluation would be wrong, so it stops instead.
_CALLER_ERRORS = {401: "the key was refused", 403: "the key may not address tiers (it needs direct_tiers: true)",
                  429: "the key is rate limited (use one without requests_per_minute)"}


class AdaptError(RuntimeError):
    """`cascade adapt` cannot run as asked: the config, the recordings or the gateway; the message says what to fix."""


@dataclass(frozen=True)
class AdaptResult:
    """What one `cascade adapt` run did, for the report table and for callers that act on it."""

    route: str
    adapter: str
    adapter_path: Path
    training: TrainSummary
    baseline_model: str
    """What the held-out requests were compared against: the SLM, with the route's current adapter if it has one."""
    adapted_model: str
    """The candidate as the gateway names it: `<tier>:<adapter>`."""
    base: HeldOutResult
    adapted: HeldOutResult
    base_errors: int
    adapted_errors: int
    """Replies other than 200 (counted as failures at zero cost), e.g. an adapter the engine would not load."""
    decision: PromotionDecision
    recorded: int
    used: int
    skipped: int
    held_out: int
    config_written: bool


# ---- config ---------------------------------------------------------------------------------------------


def _adaptable_tier(config: CascadeConfig, route_name: str) -> tuple[RouteConfig, TierConfig, Path]:
    """The route, its first tier and that tier's `lora.adapter_dir`; AdaptError naming the missing setting."""
    routes = {route.name: route for route in config.routes}
    if route_name not in routes:
        raise AdaptError(f"route {route_name!r} does not exist; known: {', '.join(routes)}")
    route = routes[route_name]
    tier = config.tier(config.route_tiers(route)[0])
    if not isinstance(tier, TierConfig):
        raise AdaptError(f"route {route_name!r} starts with remote tier {tier.name!r}; adapters are trained for a "
                         f"vLLM tier of this cluster: put one first in routes.{route_name}.tiers")
    if tier.lora is None or tier.lora.adapter_dir is None:
        raise AdaptError(f"tier {tier.name!r} (the first of route {route_name!r}) has no lora.adapter_dir: add "
                         f"`lora: {{adapter_dir: /path/to/adapters}}` to it, so trained adapters can be served")
    return route, tier, Path(tier.lora.adapter_dir).expanduser()


def adapter_name(route: str, now: datetime) -> str:
    """`<route>-<UTC time>`, e.g. tools-20261126t093000: sorts by age, and fits ADAPTER_NAME_PATTERN."""
    name = f"{route[:_ROUTE_PREFIX_CHARS].rstrip('-_')}-{now.astimezone(UTC):%Y%m%dT%H%M%S}".lower()
    if not re.fullmatch(ADAPTER_NAME_PATTERN, name):
        raise AdaptError(f"cannot make an adapter name from route {route!r}: {name!r}")
    return name


# ---- data -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    train: list[TrainingPair]
    held_out: list[RecordedExample]
    recorded: int
    skipped: int


def _split(examples: Sequence[RecordedExample], describe_tools: bool, fraction: float) -> _Split:
    """Training pairs and held-out examples (whole examples, so their requests can be replayed)."""
    pairs = build_pairs(examples, describe_tools=describe_tools)
    usable = {pair.id for pair in pairs.pairs}
    train, held_out = split_held_out([example for example in examples if example.id in usable], fraction,
                                     minimum=MINIMUM_HELD_OUT)
    train_ids = {example.id for example in train}
    return _Split(train=[pair for pair in pairs.pairs if pair.id in train_ids], held_out=held_out,
                  recorded=len(examples), skipped=pairs.skipped_free_text + pairs.skipped_invalid)


def _read_examples(config: CascadeConfig, route: str) -> list[RecordedExample]:
    path = recording_path(config.gateway.recording)
    if not path.is_file():  # opening would create an empty store
        raise AdaptError(f"no recordings at {path}: set gateway.recording.enabled: true, let route {route!r} "
                         "escalate requests, then adapt")
    with RecordingStore(path) as store:
        return store.examples(route)


# ---- evaluation -----------------------------------------------------------------------------------------


def replay_body(example: RecordedExample, model: str, max_tokens: int = REPLAY_MAX_TOKENS) -> dict[str, Any]:
    """The recorded request (its contract fields only) sent to `model`, greedy, so both runs are comparable."""
    body = {key: example.request[key] for key in CONTRACT_FIELDS if key in example.request}
    return {**body, "model": model, "temperature": 0, "max_tokens": max_tokens}


def _evaluate(client: httpx.Client, model: str, examples: Sequence[RecordedExample],
              max_tokens: int) -> tuple[HeldOutResult, int]:
    """(successes and cost over the held-out examples, replies other than 200) for one model."""
    successes, cost, errors = 0, 0.0, 0
    for example in tqdm(examples, desc=f"held-out {model}", unit="request"):
        try:
            reply = client.post("/v1/chat/completions", json=replay_body(example, model, max_tokens))
        except httpx.TimeoutException:
            errors += 1
            continue
        except httpx.TransportError as error:
            raise AdaptError(f"lost the gateway at {client.base_url} while evaluating {model!r}: {error}") from None
        if reply.status_code in _CALLER_ERRORS:
            raise AdaptError(f"the gateway answered {reply.status_code} for model {model!r}: "
                             f"{_CALLER_ERRORS[reply.status_code]}; {API_KEY_ENV} holds the key")
        if reply.status_code != 200:
            errors += 1
            continue
        body = reply.json()
        cost += float(body.get("cascade", {}).get("cost_usd") or 0.0)
        successes += answer_matches(example, body["choices"][0]["message"])
    return HeldOutResult(cases=len(examples), successes=successes, cost_usd=cost), errors


def _check_gateway(client: httpx.Client, tier: str) -> None:
    """Fail before training (minutes) rather than after it: the cluster is down, the key is refused, or the
    running cluster was not started from this config."""
    try:
        reply = client.get("/v1/models")
    except httpx.TransportError as error:
        raise AdaptError(f"the gateway at {client.base_url} does not answer ({error}); is the cluster up "
                         "(`cascade up --config ...`)? adapt evaluates adapters on the running cluster") from None
    if reply.status_code in _CALLER_ERRORS:
        raise AdaptError(f"the gateway at {client.base_url} answered {reply.status_code}: "
                         f"{_CALLER_ERRORS[reply.status_code]}; {API_KEY_ENV} holds the key")
    if reply.status_code != 200 or tier not in {model["id"] for model in reply.json().get("data", [])}:
        raise AdaptError(f"the gateway at {client.base_url} does not serve tier {tier!r} (HTTP {reply.status_code}); "
                         "is it running this config?")


# ---- the run --------------------------------------------------------------------------------------------


def run_adapt(
    config_path: Path,
    route: str,
    *,
    base_url: str,
    settings: TrainSettings,
    held_out_fraction: float = 0.25,
    out_dir: Path | None = None,
    apply: bool = True,
    timeout_s: float = 900.0,
    progress: Callable[[str], None] = lambda _: None,
) -> AdaptResult:
    """Train an adapter of the route's SLM on its recorded examples; promote and apply it only if it wins.

    `out_dir` overrides where the adapter folder is written, for when this machine sees the tier's
    `lora.adapter_dir` under another path; the engines must find it there. With `apply=False` the config is
    never written (the adapter is, as the evaluation serves it). A refused adapter's folder is kept for
    inspection. Raises AdaptError, NotEnoughDataError, TrainingError, RecordingError, ConfigError.
    """
    if not 0 < held_out_fraction < 1:
        raise AdaptError(f"the held-out fraction must be between 0 and 1, got {held_out_fraction}")
    config = load_config(config_path)
    route_config, tier, adapter_dir = _adaptable_tier(config, route)
    if settings.rank > tier.lora.max_lora_rank:
        raise AdaptError(f"rank {settings.rank} exceeds the lora.max_lora_rank ({tier.lora.max_lora_rank}) of "
                         f"tier {tier.name!r}, so its engines could not load the adapter: lower the rank or raise "
                         "max_lora_rank")
    data = _split(_read_examples(config, route), tier.describe_tools_in_prompt, held_out_fraction)
    require_minimum(len(data.train), len(data.held_out))
    name = adapter_name(route, datetime.now(UTC))
    path = (out_dir or adapter_dir) / name
    if path.exists() or name in tier.lora.adapters:
        raise AdaptError(f"adapter {name!r} exists already ({path}); try again in a second")
    max_tokens = min(REPLAY_MAX_TOKENS, config.gateway.max_tokens_limit)
    with httpx.Client(base_url=base_url.rstrip("/"), headers=auth_headers(),
                      timeout=config.gateway.default_deadline_s + 10) as client:
        _check_gateway(client, tier.name)
        progress(f"training adapter {name} of {tier.name} on {len(data.train)} pairs")
        summary = train_lora(Path(resolve_model(tier.model)), data.train, settings, path)
        baseline = tier.name if route_config.adapter is None else f"{tier.name}:{route_config.adapter}"
        candidate = f"{tier.name}:{name}"
        progress(f"replaying {len(data.held_out)} held-out requests to {baseline} and to {candidate}")
        try:
            base, base_errors = _evaluate(client, baseline, data.held_out, max_tokens)
            adapted, adapted_errors = _evaluate(client, candidate, data.held_out, max_tokens)
        except AdaptError as error:
            raise AdaptError(f"{error} (the trained adapter stays at {path})") from None
    decision = decide_promotion(base, adapted)
    written = decision.promote and apply
    if written:
        new_config = write_route_fields(Path(config_path), route, {"adapter": name})
        progress(f"routes.{route}.adapter = {name} written to {config_path}; applying it")
        try:
            up(new_config, timeout_s, progress, multinode=running_multinode())
        except ClusterError as error:
            raise AdaptError(f"{config_path} now sets the adapter (previous version in {config_path}.bak) but "
                             f"applying it failed: {error}; run `cascade up --config {config_path}`") from None
    return AdaptResult(
        route=route, adapter=name, adapter_path=path, training=summary, baseline_model=baseline,
        adapted_model=candidate, base=base, adapted=adapted, base_errors=base_errors, adapted_errors=adapted_errors,
        decision=decision, recorded=data.recorded, used=data.recorded - data.skipped, skipped=data.skipped,
        held_out=len(data.held_out), config_written=written,
    )


def format_adapt_result(result: AdaptResult) -> str:
    """The run as a terminal table: data, training, the two held-out runs, the decision."""
    t = result.training
    rows = [
        ("route", result.route),
        ("examples", (f"{result.recorded} recorded, {result.used} usable ({result.skipped} skipped: free text or "
                     f"not fitting the request), {result.held_out} held out")),
        ("training", (f"{t.examples} pairs ({t.too_long} too long), {t.epochs} epochs, rank {t.rank}, "
                     f"loss {t.first_loss:.3f} -> {t.last_loss:.3f}, {t.seconds:.0f} s")),
        ("adapter", f"{result.adapter} at {result.adapter_path}"),
    ]
    lines = [f"{label:<10} {value}" for label, value in rows]
    width = max(len(result.baseline_model), len(result.adapted_model), len("model"))
    lines.append(f"\n{'model':<{width}}  {'success':>13}  {'cost $':>10}  {'CPS $':>10}  {'errors':>6}")
    for model, run, errors in ((result.baseline_model, result.base, result.base_errors),
                               (result.adapted_model, result.adapted, result.adapted_errors)):
        success = f"{run.successes}/{run.cases} {run.success_rate:.0%}"
        lines.append(f"{model:<{width}}  {success:>13}  {run.cost_usd:>10.3g}  {run.cps:>10.3g}  {errors:>6}")
    verdict = "promoted" if result.decision.promote else "not promoted"
    lines.append(f"\n{verdict}: {result.decision.reason}")
    if result.config_written:
        lines.append(f"config: routes.{result.route}.adapter = {result.adapter} (written and applied)")
    elif result.decision.promote:
        lines.append("config: unchanged (--no-apply)")
    else:
        lines.append(f"config: unchanged; the candidate stays at {result.adapter_path} for inspection")
    return "\n".join(lines)
