"""Energy meters that say where their joules come from, and exact apportionment to requests.

Only NVML and RAPL are measurements; `ModelledEnergyMeter` is an estimate and labels itself so, and
the label travels with every figure (`cascade.energy_source`). Meters are cumulative: read before and
after a piece of work and subtract. A meter covers a whole device, so concurrent requests share one
metered total; `apportion` splits it (by tokens or engine time) without creating or losing a joule.
"""

import math
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from cluster.telemetry.semconv import EnergySource

POWERCAP_ROOT = Path("/sys/class/powercap")
_RAPL_PACKAGE = re.compile(r"intel-rapl:\d+")  # top-level packages; subzones are inside them


class EnergyMeterUnavailable(RuntimeError):
    """The counter this meter needs cannot be read here."""


class EnergyMeter(ABC):
    """Cumulative energy since the meter was created, in joules, with an honest source."""

    source: EnergySource

    @abstractmethod
    def read_j(self) -> float:
        """Joules consumed since construction; monotonic non-decreasing."""


def assigned_gpus(environ: Mapping[str, str]) -> list[str] | None:
    """The GPUs this process was given, as `CUDA_VISIBLE_DEVICES` names them (Ray sets it for each replica from
    the accelerator ids it assigned): indices or `GPU-`/`MIG-` UUIDs. None when unset (every GPU is this
    process's); an empty list when set empty (none is)."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


class NvmlEnergyMeter(EnergyMeter):
    """GPU board energy from NVML's `nvmlDeviceGetTotalEnergyConsumption` (mJ, Volta and newer), over the GPUs
    this replica was given only: on a node with several GPUs, a neighbour's work is not this replica's energy.

    `devices` are `CUDA_VISIBLE_DEVICES` entries (default: this process's, see `assigned_gpus`). An index is an
    NVML index, which is PCI bus order, as Ray numbers GPUs; a UUID is looked up as such.
    """

    source = EnergySource.NVML

    def __init__(self, devices: Sequence[str] | None = None) -> None:
        devices = assigned_gpus(os.environ) if devices is None else devices
        try:
            import pynvml

            pynvml.nvmlInit()
            if devices is None:
                self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            else:
                self._handles = [pynvml.nvmlDeviceGetHandleByIndex(int(device)) if device.isdigit()
                                 else pynvml.nvmlDeviceGetHandleByUUID(device) for device in devices]
            if not self._handles:
                raise EnergyMeterUnavailable("no GPU is assigned to this process" if devices is not None
                                             else "NVML reports no GPU")
            self._read_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption
            self._origin_mj = self._total_mj()
        except ImportError as exc:
            raise EnergyMeterUnavailable("nvidia-ml-py is not installed") from exc
        except pynvml.NVMLError as exc:
            raise EnergyMeterUnavailable(f"NVML: {exc}") from exc

    def read_j(self) -> float:
        return (self._total_mj() - self._origin_mj) / 1e3

    def _total_mj(self) -> int:
        return sum(self._read_mj(handle) for handle in self._handles)


class RaplEnergyMeter(EnergyMeter):
    """CPU package energy from Linux powercap RAPL counters (µJ), summed over packages.

    The counters wrap at `max_energy_range_uj` (taken as the modulus, as powercap consumers such as
    Kepler do); each read adds the forward distance since the last one, so call `read_j` at least
    once per wrap period (minutes at full load) or a whole wrap is missed.
    """

    source = EnergySource.RAPL

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        zones = sorted(p for p in root.glob("intel-rapl:*") if _RAPL_PACKAGE.fullmatch(p.name))
        try:
            self._zones = [(z / "energy_uj", int((z / "max_energy_range_uj").read_text())) for z in zones]
            self._last = [int(counter.read_text()) for counter, _ in self._zones]
        except OSError as exc:  # the counters are root-only on many kernels
            raise EnergyMeterUnavailable(f"RAPL counters unreadable: {exc}") from exc
        if not self._zones:
            raise EnergyMeterUnavailable(f"no RAPL package zones under {root}")
        self._total_uj = 0

    def read_j(self) -> float:
        for i, (counter, wrap_uj) in enumerate(self._zones):
            now = int(counter.read_text())
            self._total_uj += (now - self._last[i]) % wrap_uj
            self._last[i] = now
        return self._total_uj / 1e6


class ModelledEnergyMeter(EnergyMeter):
    """Estimate: `watts * utilisation * elapsed seconds`. Labelled `model`, never a measurement."""

    source = EnergySource.MODEL

    def __init__(self, watts: float, utilisation: float, clock: Callable[[], float] = time.monotonic) -> None:
        if watts < 0 or not 0 <= utilisation <= 1:
            raise ValueError("watts must be >= 0 and utilisation in [0, 1]")
        self._power_w = watts * utilisation
        self._clock = clock
        self._start = clock()

    def read_j(self) -> float:
        return self._power_w * (self._clock() - self._start)


DEFAULT_PREFERENCE: tuple[EnergySource, ...] = (EnergySource.NVML, EnergySource.RAPL, EnergySource.MODEL)


def detect_energy_meter(
    prefer: Sequence[EnergySource] = DEFAULT_PREFERENCE,
    *,
    model_watts: float = 0.0,
    model_utilisation: float = 1.0,
) -> EnergyMeter:
    """The first meter in `prefer` that can be read here; MODEL (always available) needs the figures."""
    factories: dict[EnergySource, Callable[[], EnergyMeter]] = {
        EnergySource.NVML: NvmlEnergyMeter,
        EnergySource.RAPL: RaplEnergyMeter,
        EnergySource.MODEL: lambda: ModelledEnergyMeter(model_watts, model_utilisation),
    }
    reasons = []
    for source in prefer:
        try:
            return factories[source]()
        except EnergyMeterUnavailable as exc:
            reasons.append(f"{source}: {exc}")
    raise EnergyMeterUnavailable("; ".join(reasons) or "no energy source preferred")


def apportion(total_j: float, shares: Mapping[Any, float]) -> dict[Any, float]:
    """Split `total_j` across keys in proportion to `shares` (tokens, engine seconds...).

    Conservation is exact, not approximate: every part is a whole number of `ulp(total_j)` (largest
    remainder method on exact fractions), so the parts' float sum, in any order, equals `total_j`.
    Each part is within one ulp of its exact proportional value.
    """
    if not math.isfinite(total_j) or total_j < 0:
        raise ValueError(f"total_j must be finite and >= 0, got {total_j}")
    if any(not math.isfinite(s) or s < 0 for s in shares.values()):
        raise ValueError("shares must be finite and >= 0")
    weight = sum(Fraction(s) for s in shares.values())
    if weight == 0:
        raise ValueError("shares must have a positive sum")
    if total_j == 0:
        return {key: 0.0 for key in shares}
    quantum = math.ulp(total_j)
    units = round(Fraction(total_j) / Fraction(quantum))  # exact integer: total_j is a multiple of its ulp
    exact = {key: units * Fraction(s) / weight for key, s in shares.items()}
    whole = {key: math.floor(value) for key, value in exact.items()}
    leftover = units - sum(whole.values())
    by_remainder = sorted(shares, key=lambda key: exact[key] - whole[key], reverse=True)
    for key in by_remainder[:leftover]:
        whole[key] += 1
    return {key: whole[key] * quantum for key in shares}
