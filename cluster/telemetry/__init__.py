"""Telemetry and accounting core: spans in, CPS / success / energy figures and Prometheus text out.

Modules: `semconv` (names), `tracing` (provider, propagation), `export` (bounded OTLP export with
loss counts), `accounting` + `aggregate` (records from spans), `window` (the books), `metrics` (Prometheus),
`energy` (meters and apportionment).

Names are imported lazily so that `cluster.telemetry.energy` (stdlib only) can run on a GPU box
without the OpenTelemetry, Prometheus or pydantic packages.
"""

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {  # public name -> defining module
    "AccountingSpanProcessor": "accounting",
    "RequestWindow": "window",
    "UnknownRequestError": "window",
    "SNAPSHOT_KEYS": "aggregate",
    "EnergyMeter": "energy",
    "EnergyMeterUnavailable": "energy",
    "ModelledEnergyMeter": "energy",
    "NvmlEnergyMeter": "energy",
    "RaplEnergyMeter": "energy",
    "apportion": "energy",
    "detect_energy_meter": "energy",
    "CountingBatchSpanProcessor": "export",
    "ExportCounter": "export",
    "ExportCounts": "export",
    "CONTENT_TYPE": "metrics",
    "AccountingCollector": "metrics",
    "GenAiMetricsProcessor": "metrics",
    "exposition": "metrics",
    "TracingSettings": "tracing",
    "configure_tracing": "tracing",
    "extract_context": "tracing",
    "inject_context": "tracing",
    "record_content": "tracing",
}

__all__ = [
    "CONTENT_TYPE",
    "SNAPSHOT_KEYS",
    "AccountingCollector",
    "AccountingSpanProcessor",
    "CountingBatchSpanProcessor",
    "EnergyMeter",
    "EnergyMeterUnavailable",
    "ExportCounter",
    "ExportCounts",
    "GenAiMetricsProcessor",
    "ModelledEnergyMeter",
    "NvmlEnergyMeter",
    "RaplEnergyMeter",
    "RequestWindow",
    "TracingSettings",
    "UnknownRequestError",
    "apportion",
    "configure_tracing",
    "detect_energy_meter",
    "exposition",
    "extract_context",
    "inject_context",
    "record_content",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return list(__all__)
