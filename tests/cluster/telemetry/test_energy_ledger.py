"""The ledger splits a replica's metered energy among overlapping requests and conserves the total."""

from __future__ import annotations

import pytest

from cluster.telemetry.energy import EnergyMeter, EnergyMeterUnavailable, NvmlEnergyMeter
from cluster.telemetry.energy_ledger import EnergyLedger
from cluster.telemetry.semconv import EnergySource


class ScriptedMeter(EnergyMeter):
    """A counter that advances by a scripted amount at each read (below the ledger's boundary)."""

    source = EnergySource.MODEL

    def __init__(self, *increments: float) -> None:
        self.total = 0.0
        self.increments = list(increments)

    def read_j(self) -> float:
        self.total += self.increments.pop(0)
        return self.total


def test_overlapping_requests_share_intervals_equally_and_idle_is_kept_apart() -> None:
    # reads: init, start a, start b, finish a, finish b, start c, finish c
    meter = ScriptedMeter(0.0, 5.0, 10.0, 6.0, 4.0, 7.0, 3.0)
    ledger = EnergyLedger(meter)
    ledger.start("a")       # 5 J idle before it
    ledger.start("b")       # 10 J: a alone
    a = ledger.finish("a")  # 6 J: a and b, 3 each
    b = ledger.finish("b")  # 4 J: b alone
    ledger.start("c")       # 7 J idle
    c = ledger.finish("c")  # 3 J: c alone
    assert (a, b, c) == (13.0, 7.0, 3.0)
    assert ledger.idle_j == 12.0
    assert a + b + c + ledger.idle_j == meter.total


def test_many_overlapping_requests_conserve_the_busy_energy() -> None:
    meter = ScriptedMeter(0.0, *[0.1 * (i % 7 + 1) for i in range(40)])
    ledger = EnergyLedger(meter)
    per_request = {}
    for i in range(10):
        ledger.start(i)
    for i in range(10):
        per_request[i] = ledger.finish(i)
    busy = meter.total - ledger.idle_j
    assert sum(per_request.values()) == pytest.approx(busy, rel=1e-12)


def test_nvml_ledger_on_a_real_gpu() -> None:
    try:
        meter = NvmlEnergyMeter()
    except EnergyMeterUnavailable as reason:
        pytest.skip(f"no NVIDIA GPU: NVML not available ({reason})")
    ledger = EnergyLedger(meter)
    ledger.start("r")
    total = sum(i * i for i in range(2_000_000))  # any work; the GPU idles but its counter still advances
    energy = ledger.finish("r")
    assert total > 0 and energy >= 0 and ledger.source == "nvml"
