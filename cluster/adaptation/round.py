"""One adaptation round, as Ray work on the cluster: train a candidate adapter, replay, decide.

The cluster's books start a round as a Ray task on the head node (where the recordings are) and own it, so
a round outlives the `cascade adapt` that asked for it. The round trains in a second Ray task that asks for
the resources the route's policy names (`adaptation.train_resources`: a GPU where the SLM's pool has one,
which also trains with QLoRA), retried once by Ray when its worker or node is lost. It then replays the
held-out cases, which no round trains on (a hash of each example's id decides), and a regression set of
other routes' requests, to the model the route serves now and to the candidate (`<tier>:<adapter>`),
through the gateway's own handle, and decides with `policies.promotion`.

The round returns what it found; the books record it and promote. Whatever goes wrong (too few examples, a
base model that changed under the serving adapter, training lost twice or past its deadline, the gateway
gone) ends the round `failed` with the reason, and the serving adapter is not touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cluster.adaptation.dataset import (
    HELD_OUT_FRACTION,
    MINIMUM_HELD_OUT,
    NotEnoughDataError,
    TrainingPair,
    build_pairs,
    require_minimum,
    split_held_out,
)
from cluster.adaptation.success import answer_matches
from cluster.adaptation.train import TrainingError, TrainSettings, TrainSummary, train_lora
from cluster.config import ADAPTER_NAME_PATTERN, CascadeConfig, RouteConfig, TierConfig
from cluster.store.models import ModelPreparationError, resolve_model
from cluster.store.recording import CONTRACT_FIELDS, RecordedExample, RecordingError, RecordingStore, recording_path
from policies.promotion import HeldOutResult, RegressionCheck, decide_promotion

__all__ = ["REPLAY_MAX_TOKENS", "RoundError", "RoundOutcome", "RoundRequest", "adaptable_tier", "adapter_name",
           "replay_body", "run_round"]

REPLAY_MAX_TOKENS = 256
REPLAY_CONCURRENCY = 4
_ROUTE_PREFIX_CHARS = 25  # + "-YYYYmmddtHHMMSS" (16) stays within the adapter name's 41 characters

Report = Callable[[str, dict[str, Any]], None]


class RoundError(RuntimeError):
    """The round cannot go on; the message is the reason the ledger records."""


@dataclass(frozen=True)
class RoundRequest:
    """What a round is asked to do: the cluster's config (as the gateway runs it), the route, how to train."""

    config: dict[str, Any]
    route: str
    settings: TrainSettings = field(default_factory=TrainSettings)
    held_out_fraction: float = HELD_OUT_FRACTION
    promote: bool = True
    """False: decide and report, but leave the serving adapter as it is (`cascade adapt run --no-promote`)."""
    serving_adapter: str | None = None
    """What the route serves now (the ledger's version, else the config's adapter): the candidate's rival."""
    serving_base_model: str | None = None
    """The base model the serving version was trained on; a different one now fails the round."""


@dataclass(frozen=True)
class RoundOutcome:
    state: str
    """promoted, refused or failed."""
    reason: str
    adapter: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)


# ---- config ---------------------------------------------------------------------------------------------


def adaptable_tier(config: CascadeConfig, route_name: str) -> tuple[RouteConfig, TierConfig, Path]:
    """The route, its first tier and that tier's `lora.adapter_dir`; RoundError naming the missing setting."""
    routes = {route.name: route for route in config.routes}
    if route_name not in routes:
        raise RoundError(f"route {route_name!r} does not exist; known: {', '.join(routes)}")
    route = routes[route_name]
    tier = config.tier(config.route_tiers(route)[0])
    if not isinstance(tier, TierConfig):
        raise RoundError(f"route {route_name!r} starts with remote tier {tier.name!r}; adapters are trained for a "
                         f"vLLM tier of this cluster: put one first in routes.{route_name}.tiers")
    if tier.lora is None or tier.lora.adapter_dir is None:
        raise RoundError(f"tier {tier.name!r} (the first of route {route_name!r}) has no lora.adapter_dir: add "
                         f"`lora: {{adapter_dir: /path/to/adapters}}` to it, so trained adapters can be served")
    return route, tier, Path(tier.lora.adapter_dir).expanduser()


def adapter_name(route: str, now: datetime) -> str:
    """`<route>-<UTC time>`, e.g. tools-20261126t093000: sorts by age, and fits ADAPTER_NAME_PATTERN."""
    name = f"{route[:_ROUTE_PREFIX_CHARS].rstrip('-_')}-{now.astimezone(UTC):%Y%m%dT%H%M%S}".lower()
    if not re.fullmatch(ADAPTER_NAME_PATTERN, name):
        raise RoundError(f"cannot make an adapter name from route {route!r}: {name!r}")
    return name


# ---- data -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    train: list[TrainingPair]
    held_out: list[RecordedExample]
    recorded: int
    skipped: int
    snapshot: str
    """A digest of the recorded examples' ids: which data the round saw, for the adapter's lineage."""


def _split(examples: Sequence[RecordedExample], describe_tools: bool, fraction: float) -> _Split:
    """Training pairs and held-out examples (whole examples, so their requests can be replayed)."""
    pairs = build_pairs(examples, describe_tools=describe_tools)
    usable = {pair.id for pair in pairs.pairs}
    train, held_out = split_held_out([example for example in examples if example.id in usable], fraction,
                                     minimum=MINIMUM_HELD_OUT)
    train_ids = {example.id for example in train}
    digest = hashlib.sha256("\n".join(sorted(example.id for example in examples)).encode()).hexdigest()[:16]
    return _Split(train=[pair for pair in pairs.pairs if pair.id in train_ids], held_out=held_out,
                  recorded=len(examples), skipped=pairs.skipped_free_text + pairs.skipped_invalid, snapshot=digest)


def _regression_set(config: CascadeConfig, route: RouteConfig, tier: str,
                    store: RecordingStore) -> list[RecordedExample]:
    """Requests of the regression routes (by default every other route starting on the same tier), oldest
    first and at most `regression_cases`: the same ones every round, and never trained on (rounds of a route
    train on that route's examples only)."""
    names = route.adaptation.regression_routes
    if names is None:
        names = [other.name for other in config.routes
                 if other.name != route.name and config.route_tiers(other)[:1] == [tier]]
    requests = [example for name in names for example in store.examples(name)]
    requests.sort(key=lambda example: (example.created_at, example.id))
    return requests[:route.adaptation.regression_cases]


# ---- evaluation -----------------------------------------------------------------------------------------


def replay_body(example: RecordedExample, model: str, max_tokens: int = REPLAY_MAX_TOKENS) -> dict[str, Any]:
    """The recorded request (its contract fields only) sent to `model`, greedy, so both runs are comparable."""
    body = {key: example.request[key] for key in CONTRACT_FIELDS if key in example.request}
    return {**body, "model": model, "temperature": 0, "max_tokens": max_tokens}


def _evaluate(gateway: Any, model: str, examples: Sequence[RecordedExample], max_tokens: int,
              timeout_s: float) -> tuple[HeldOutResult | None, int]:
    """(successes and cost over the examples, failed replies) for one model, through the gateway's handle; a
    failed reply (an adapter the engine refused, a timeout) counts as a failure at no cost."""
    if not examples:
        return None, 0
    successes, cost, errors = 0, 0.0, 0
    for start in range(0, len(examples), REPLAY_CONCURRENCY):
        batch = examples[start:start + REPLAY_CONCURRENCY]
        responses = [gateway.chat.remote(replay_body(example, model, max_tokens)) for example in batch]
        for example, response in zip(batch, responses, strict=True):
            try:
                body = response.result(timeout_s=timeout_s)
            except Exception:  # noqa: BLE001 - any failed reply is a failed case, whatever raised it
                errors += 1
                continue
            cost += float(body.get("cascade", {}).get("cost_usd") or 0.0)
            successes += answer_matches(example, body["choices"][0]["message"])
    return HeldOutResult(cases=len(examples), successes=successes, cost_usd=cost), errors


def _figures(result: HeldOutResult | None, errors: int) -> dict[str, Any] | None:
    return None if result is None else {**asdict(result), "errors": errors, "cps": result.cps}


# ---- the round ------------------------------------------------------------------------------------------


def _train(model_dir: str, pairs: list[TrainingPair], settings: TrainSettings, out: Path, round_id: int,
           books: Any) -> TrainSummary:
    """The training task's body: say where it runs (a retry shows as a second attempt), then train."""
    import ray

    ray.get(books.training_started.remote(round_id, os.getpid(), ray.get_runtime_context().get_node_id()))
    return train_lora(Path(model_dir), pairs, settings, out, progress=False)


def _run_training(model_dir: str, pairs: list[TrainingPair], settings: TrainSettings,
                  out: Path, round_id: int, books: Any, timeout_s: float, resources: dict[str, Any]) -> TrainSummary:
    import ray
    from ray.exceptions import GetTimeoutError, RayError, RayTaskError

    task = ray.remote(_train).options(max_retries=1, retry_exceptions=False, **resources)
    reference = task.remote(model_dir, pairs, settings, out, round_id, books)
    try:
        return ray.get(reference, timeout=timeout_s)
    except GetTimeoutError:
        ray.cancel(reference, force=True)
        raise RoundError(f"training did not end within {timeout_s:g} s (adaptation.train_timeout_s): no capacity "
                         f"for {resources}, or too slow there") from None
    except RayTaskError as error:
        cause = error.cause if isinstance(error.cause, TrainingError) else error
        raise RoundError(f"training failed: {cause}") from None
    except RayError as error:  # the worker or its node was lost again after Ray's retry
        raise RoundError(f"training was lost twice (worker or node died): {type(error).__name__}") from None


def run_round(request: RoundRequest, round_id: int, books: Any, report: Report) -> RoundOutcome:
    """The round's body (a Ray task): never raises; a failure is an outcome with its reason."""
    try:
        return _round(request, round_id, books, report)
    except (RoundError, NotEnoughDataError, ModelPreparationError, RecordingError) as error:
        return RoundOutcome(state="failed", reason=str(error))


def _round(request: RoundRequest, round_id: int, books: Any, report: Report) -> RoundOutcome:
    from ray import serve

    config = CascadeConfig.model_validate(request.config)
    route, tier, adapter_dir = adaptable_tier(config, request.route)
    settings = request.settings
    if settings.rank > tier.lora.max_lora_rank:
        raise RoundError(f"rank {settings.rank} exceeds the lora.max_lora_rank ({tier.lora.max_lora_rank}) of tier "
                         f"{tier.name!r}, so its engines could not load the adapter")
    if request.serving_base_model is not None and request.serving_base_model != tier.model:
        raise RoundError(f"the serving adapter {request.serving_adapter!r} was trained on "
                         f"{request.serving_base_model!r} but tier {tier.name!r} now serves {tier.model!r}: "
                         f"`cascade adapt rollback --route {route.name}` takes it out of service, then adapt again")
    policy = route.adaptation
    if policy.train_resources.num_gpus > 0:
        settings = replace(settings, qlora=True)
    with RecordingStore(recording_path(config.gateway.recording)) as store:
        data = _split(store.examples(route.name), tier.describe_tools_in_prompt, request.held_out_fraction)
        regression = _regression_set(config, route, tier.name, store)
    facts: dict[str, Any] = {"recorded": data.recorded, "skipped": data.skipped, "train_pairs": len(data.train),
                             "held_out": len(data.held_out), "regression_cases": len(regression),
                             "data_snapshot": data.snapshot}
    report("checking data", facts)
    require_minimum(len(data.train), len(data.held_out))
    name = adapter_name(route.name, datetime.now(UTC))
    out = adapter_dir / name
    if out.exists() or name in tier.lora.adapters:
        raise RoundError(f"adapter {name!r} exists already ({out})")
    report(f"training {name} on {len(data.train)} pairs", {"adapter": name})
    started = time.monotonic()
    summary = _run_training(resolve_model(tier.model), data.train, settings, out, round_id, books,
                            policy.train_timeout_s, policy.train_resources.to_ray())
    facts = {"first_loss": summary.first_loss, "last_loss": summary.last_loss, "epochs": summary.epochs,
             "too_long": summary.too_long, "train_s": round(time.monotonic() - started, 1)}
    report("replaying held-out and regression requests", facts)
    gateway = serve.get_app_handle(config.app_name)
    baseline = tier.name if request.serving_adapter is None else f"{tier.name}:{request.serving_adapter}"
    candidate = f"{tier.name}:{name}"
    max_tokens, timeout_s = min(REPLAY_MAX_TOKENS, config.gateway.max_tokens_limit), config.gateway.default_deadline_s
    base, base_errors = _evaluate(gateway, baseline, data.held_out, max_tokens, timeout_s)
    adapted, adapted_errors = _evaluate(gateway, candidate, data.held_out, max_tokens, timeout_s)
    regression_base, regression_base_errors = _evaluate(gateway, baseline, regression, max_tokens, timeout_s)
    regression_adapted, regression_adapted_errors = _evaluate(gateway, candidate, regression, max_tokens, timeout_s)
    check = None if regression_base is None else RegressionCheck(regression_base, regression_adapted,
                                                                   policy.regression_margin)
    decision = decide_promotion(base, adapted, check)
    facts = {"baseline": baseline, "candidate": candidate, "base": _figures(base, base_errors),
             "adapted": _figures(adapted, adapted_errors),
             "regression_base": _figures(regression_base, regression_base_errors),
             "regression_adapted": _figures(regression_adapted, regression_adapted_errors)}
    report("deciding", facts)
    lineage = {"base_model": tier.model, "data_snapshot": data.snapshot, "examples": data.recorded,
               "round": round_id, "parent": request.serving_adapter, "rank": settings.rank}
    if not decision.promote:
        return RoundOutcome("refused", decision.reason, name, facts, lineage)
    if not request.promote:
        return RoundOutcome("refused", f"would promote, but --no-promote: {decision.reason}", name, facts, lineage)
    return RoundOutcome("promoted", decision.reason, name, facts, lineage)
