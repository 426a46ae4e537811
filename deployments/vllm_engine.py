"""One vLLM `AsyncLLM` (v1) engine plus vLLM's own OpenAI chat layer over it.

vLLM already implements the OpenAI chat semantics slm-cascade needs: chat templates, `tools` with
`tool_choice` auto/required/named (the latter two through guided decoding), `response_format` json_object and
json_schema, logprobs, usage, SSE streaming and OpenAI-style validation errors. This module builds that layer
the way `vllm serve` does (its own argument parser, `init_app_state`), as Ray Serve LLM does too, so the
model-server deployment stays a thin actor and vLLM remains the authority on engine arguments.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from cluster.config import LoraSettings, TierConfig
from cluster.store.models import resolve_model
from deployments.adapters import AdapterError
from policies.tool_choice import forced_tools, rewrite_forced_tool_choice, to_tool_calls

# What slm-cascade relies on from every tier; a tier's engine_args may override them (e.g. a model-specific
# tool parser on GPU). xgrammar compiles the JSON Schema / tool grammars; compact JSON (no free whitespace)
# keeps small models from spending their token budget on indentation.
CASCADE_ENGINE_DEFAULTS: dict[str, Any] = {
    "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
    "tool_call_parser": "hermes",
    "enable_auto_tool_choice": True,
    "disable_log_stats": True,
}

# What a replica runs before it reports ready, so no client pays for it: the first guided request and the first
# that asks for top logprobs (as every cascade attempt does), which cost 1.6 s more than later ones on the
# bundled SLM (`bench/experiments/cold_start.py`). A forced tool call with logprobs takes the path clients take. Its
# schema is not a client's: a client's first new schema still pays one grammar compile (a cache miss).
WARM_UP_REQUEST: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Is the service ready? Answer with the tool."}],
    "tools": [{"type": "function", "function": {"name": "report_ready", "parameters": {
        "type": "object", "properties": {"ready": {"type": "boolean"}}, "required": ["ready"]}}}],
    "tool_choice": "required",
    "max_tokens": 16,
    "temperature": 0.0,
    "logprobs": True,
    "top_logprobs": 3,
}


def lora_engine_args(lora: LoraSettings) -> dict[str, Any]:
    """vLLM's LoRA arguments for a tier's adapters. The CPU cache has room for twice the adapters a replica holds:
    adapters Serve evicted while requests still use them stay loaded, and are not re-read from disk."""
    return {"enable_lora": True, "max_loras": lora.max_loras, "max_lora_rank": lora.max_lora_rank,
            "max_cpu_loras": 2 * lora.max_loras}


def engine_cli_args(tier: TierConfig, negatable: Collection[str] = ()) -> list[str]:
    """The tier as `vllm serve` flags, so vLLM's own parser validates and types every engine argument.

    Later sources win: slm-cascade's defaults, then the tier's LoRA settings, then its own engine_args. `false`
    becomes `--no-FLAG` where vLLM's parser has one (`negatable`, e.g. `--no-enable-prefix-caching`: the default
    may be on) and is left out where the flag can only switch something on.
    """
    lora = lora_engine_args(tier.lora) if tier.lora is not None else {}
    merged = CASCADE_ENGINE_DEFAULTS | lora | dict(tier.engine_args)
    flags = ["--model", resolve_model(tier.model), "--served-model-name", tier.name]
    for key, value in merged.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False and "--no-" + flag[2:] in negatable:
            flags.append("--no-" + flag[2:])
        elif value is False or value is None:
            continue
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


@dataclass(frozen=True)
class ChatResult:
    """A non-streamed answer: vLLM's OpenAI body (or error body), what the engine call took, and its energy.

    `energy_source` says how `energy_j` was obtained: `nvml` or `rapl` (metered) or `model` (estimated).
    """

    body: dict[str, Any]
    engine_s: float
    energy_j: float | None = None
    energy_source: str | None = None

    @property
    def is_error(self) -> bool:
        return "error" in self.body


@dataclass(frozen=True)
class StreamSummary:
    """The last item of a model server's stream, never sent to a client: what the gateway's books need that the
    SSE lines do not carry (the stream's energy, and how it was obtained)."""

    engine_s: float
    energy_j: float | None
    energy_source: str | None


class VllmChatEngine:
    """Owns the engine for one replica; every method is safe to call concurrently."""

    def __init__(self, engine: Any, serving_chat: Any, serving_models: Any, describe_tools: bool = False) -> None:
        self._engine = engine
        self._chat = serving_chat
        self._models = serving_models
        self._describe_tools = describe_tools

    @classmethod
    async def start(cls, tier: TierConfig) -> VllmChatEngine:
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        from vllm.v1.engine.async_llm import AsyncLLM

        parser = make_arg_parser(FlexibleArgumentParser())
        negatable = {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--no-")}
        args = parser.parse_args(engine_cli_args(tier, negatable))
        engine = AsyncLLM.from_vllm_config(AsyncEngineArgs.from_cli_args(args).create_engine_config())
        state = State()
        await init_app_state(engine, state, args, await engine.get_supported_tasks())
        return cls(engine, state.openai_serving_chat, state.openai_serving_models, tier.describe_tools_in_prompt)

    def _parse(self, body: dict[str, Any]) -> Any:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return ChatCompletionRequest.model_validate(body)

    async def _create(self, body: dict[str, Any]) -> Any:
        """vLLM's chat call; its validation errors come back as OpenAI error bodies, not exceptions."""
        from vllm.exceptions import VLLMValidationError

        try:
            return await self._chat.create_chat_completion(self._parse(body), raw_request=None)
        except (ValueError, VLLMValidationError) as error:  # pydantic's ValidationError is a ValueError
            return self._chat.create_error_response(error)

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        started = time.perf_counter()
        try:
            body, forced = rewrite_forced_tool_choice(body, self._describe_tools)
        except ValueError as error:
            return ChatResult(self.error_body(str(error), param="tool_choice"), time.perf_counter() - started)
        response = (await self._create({**body, "stream": False})).model_dump(exclude_none=True)
        if forced is not None and "error" not in response:
            response = to_tool_calls(response, forced)
        return ChatResult(body=response, engine_s=time.perf_counter() - started)

    def error_body(
        self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST, param: str | None = None
    ) -> dict[str, Any]:
        """An error found outside vLLM, as the OpenAI error body vLLM writes (status in `code`, its type names)."""
        error_type = status.phrase.replace(" ", "") + "Error"  # BadRequestError, NotFoundError, as vLLM names them
        return self._chat.create_error_response(message, error_type, status, param).model_dump()

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[str | dict[str, Any]]:
        """SSE lines from vLLM; an error before the first token is yielded once as an error body (a dict).

        A forced tool choice is answered whole and sent as one chunk: its arguments are only valid once the
        guided JSON is complete, which is also when OpenAI's own API delivers them usefully.
        """
        if forced_tools(body) is not None:
            result = await self.chat(body)
            if result.is_error:
                yield result.body
                return
            for line in completion_as_sse(result.body):
                yield line
            return
        response = await self._create({**body, "stream": True})
        if not hasattr(response, "__aiter__"):
            yield response.model_dump(exclude_none=True)
            return
        async for line in response:
            yield line

    async def warm_up(self, served_name: str) -> float:
        """Run `WARM_UP_REQUEST` once; seconds it took. Raises if the engine cannot answer it: a replica that
        fails its first request should fail to start, where Serve retries it, not fail a client."""
        started = time.perf_counter()
        result = await self.chat({**WARM_UP_REQUEST, "model": served_name})
        if result.is_error:  # e.g. engine_args' max_logprobs under the 3 the cascade asks for
            raise RuntimeError(f"warm-up request (a forced tool call with top_logprobs 3) failed: "
                               f"{result.body['error'].get('message')}")
        return time.perf_counter() - started

    @property
    def hidden_size(self) -> int:
        """The base model's hidden size, which every layer an adapter changes reads or writes."""
        return self._engine.model_config.get_hidden_size()

    def has_adapter(self, name: str) -> bool:
        return name in self._models.lora_requests

    async def load_adapter(self, name: str, local_dir: Path) -> None:
        """Load a LoRA adapter; a chat body whose `model` is `name` then runs on it (vLLM's chat layer resolves it).

        Goes through vLLM's serving-models API, as its /v1/load_lora_adapter route does, which the environment
        variable VLLM_ALLOW_RUNTIME_LORA_UPDATING only switches on for HTTP; a direct call needs no switch.
        """
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        loaded = await self._models.load_lora_adapter(LoadLoRAAdapterRequest(lora_name=name, lora_path=str(local_dir)))
        if not isinstance(loaded, str):  # an ErrorResponse: a name clash, or the engine could not load the files
            raise AdapterError(f"adapter {name!r}: vLLM refused it: {loaded.error.message}")

    async def unload_adapter(self, name: str) -> None:
        """Forget the adapter's name and free the engine's copy: vLLM's own unload only forgets the name."""
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        loaded = self._models.lora_requests.get(name)
        if loaded is None:
            return
        await self._models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
        await self._engine.remove_lora(loaded.lora_int_id)

    async def check_health(self) -> None:
        """Raises when the engine core is dead, which the replica's health check turns into a restart."""
        await self._engine.check_health()

    def shutdown(self) -> None:
        self._engine.shutdown()


def completion_as_sse(response: dict[str, Any]) -> list[str]:
    """A finished chat completion as the SSE chunks a streaming client expects."""
    chunks = []
    for choice in response["choices"]:
        delta = {key: value for key, value in choice["message"].items() if value is not None}
        for index, call in enumerate(delta.get("tool_calls", [])):
            call["index"] = index
        chunks.append({"index": choice["index"], "delta": delta, "finish_reason": choice.get("finish_reason")})
    base = {key: response[key] for key in ("id", "created", "model")}
    events = [{**base, "object": "chat.completion.chunk", "choices": [chunk]} for chunk in chunks]
    last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": response.get("usage")}
    if "cascade" in response:  # what the cascade did travels in the last chunk; OpenAI clients ignore it
        last["cascade"] = response["cascade"]
    events.append(last)
    return [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]
