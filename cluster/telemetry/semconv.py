"""Span names, attribute keys and enumerated values shared by the gateway and the accounting.

The gateway writes these; `accounting` and `metrics` read them. Keeping every key here means a
renamed attribute breaks at import time instead of silently zeroing a dashboard. GenAI keys follow the
OpenTelemetry GenAI semantic conventions (defined as literals because the SDK's copies are marked
deprecated while the conventions move to their own repository); project keys live under `cascade.`.
"""

from enum import StrEnum
from typing import Final

# --- OpenTelemetry GenAI / general semantic conventions -------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
"""Seconds from request to first streamed chunk; feeds `gen_ai_server_time_to_first_token`."""
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
ERROR_TYPE: Final = "error.type"

# --- slm-cascade attributes -----------------------------------------------------------------------
CASCADE_ROUTE: Final = "cascade.route"
CASCADE_ADAPTER: Final = "cascade.adapter"  # the LoRA adapter the route's first tier ran (rollback watch)
CASCADE_REQUEST_ID: Final = "cascade.request_id"
CASCADE_TIER: Final = "cascade.tier"
CASCADE_REPLICA: Final = "cascade.replica"  # the Serve replica that ran the engine call (routing, affinity)
CASCADE_TIER_INDEX: Final = "cascade.tier_index"
CASCADE_COST_USD: Final = "cascade.cost_usd"
CASCADE_ENERGY_J: Final = "cascade.energy_j"
CASCADE_ENERGY_SOURCE: Final = "cascade.energy_source"
CASCADE_SCHEMA_VALID: Final = "cascade.schema_valid"
CASCADE_TOOL_CALL_EXECUTABLE: Final = "cascade.tool_call.executable"
CASCADE_CONFIDENCE: Final = "cascade.confidence"
CASCADE_ESCALATION_REASON: Final = "cascade.escalation_reason"
CASCADE_OUTCOME: Final = "cascade.outcome"
CASCADE_ESCALATED: Final = "cascade.escalated"
CASCADE_TIERS_TRIED: Final = "cascade.tiers_tried"

# --- span names -----------------------------------------------------------------------------------
SPAN_REQUEST: Final = "cascade.request"
"""Root span, one per request, opened by the gateway; accounting closes its books when it ends."""
SPAN_TIER_ATTEMPT: Final = "cascade.tier_attempt"
SPAN_VERIFY: Final = "cascade.verify"
SPAN_TOOL: Final = "cascade.tool"
SPAN_PREFIX: Final = "cascade."


class Outcome(StrEnum):
    """Value of `cascade.outcome`."""

    SUCCESS = "success"
    FAILURE = "failure"


class EnergySource(StrEnum):
    """Value of `cascade.energy_source`: only NVML and RAPL are measurements; MODEL is an estimate."""

    NVML = "nvml"
    RAPL = "rapl"
    MODEL = "model"


MIXED_ENERGY_SOURCE: Final = "mixed"
"""Aggregate label when figures from different sources were summed; never reported as measured."""
