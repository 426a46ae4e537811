"""Energy meters label their source honestly; apportionment conserves the metered total exactly."""

import math
import random
import sys
from pathlib import Path

import pytest

from cluster.telemetry.energy import (
    EnergyMeterUnavailable,
    ModelledEnergyMeter,
    NvmlEnergyMeter,
    RaplEnergyMeter,
    apportion,
    detect_energy_meter,
)
from cluster.telemetry.semconv import EnergySource

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ImportError:  # the property test is extra assurance, not the only check
    given = None


def test_apportion_by_tokens_is_proportional_and_exact():
    parts = apportion(90.0, {"r1": 100, "r2": 200, "r3": 600})
    assert parts == pytest.approx({"r1": 10.0, "r2": 20.0, "r3": 60.0})
    assert sum(parts.values()) == 90.0


def test_apportion_awkward_thirds_still_sum_exactly():
    parts = apportion(0.1, {"a": 1.0, "b": 1.0, "c": 1.0})
    for order in (["a", "b", "c"], ["c", "b", "a"], ["b", "a", "c"]):
        assert sum(parts[k] for k in order) == 0.1


def test_apportion_zero_total_and_zero_share():
    assert apportion(0.0, {"a": 1.0}) == {"a": 0.0}
    assert apportion(5.0, {"a": 0.0, "b": 2.0}) == {"a": 0.0, "b": 5.0}


@pytest.mark.parametrize(
    "total, shares",
    [
        (-1.0, {"a": 1.0}),
        (math.inf, {"a": 1.0}),
        (1.0, {}),
        (1.0, {"a": 0.0}),
        (1.0, {"a": -1.0}),
        (1.0, {"a": math.nan}),
    ],
)
def test_apportion_rejects_meaningless_input(total, shares):
    with pytest.raises(ValueError):
        apportion(total, shares)


if given is not None:

    @given(
        total=st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
        shares=st.dictionaries(
            st.text(min_size=1, max_size=4),
            st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
            min_size=1,
            max_size=20,
        ).filter(lambda d: sum(d.values()) > 0),
    )
    def test_apportion_conserves_total_in_any_summation_order(total, shares):
        parts = apportion(total, shares)
        keys = list(parts)
        assert keys == list(shares)
        random.Random(0).shuffle(keys)
        assert sum(parts[k] for k in keys) == total
        assert all(p >= 0 for p in parts.values())
        weight = math.fsum(shares.values())
        for key, share in shares.items():
            assert parts[key] == pytest.approx(total * (share / weight), rel=1e-9, abs=2 * math.ulp(total))


def _rapl_tree(root: Path, packages: dict[str, tuple[int, int]]) -> None:
    for name, (energy, max_range) in packages.items():
        zone = root / name
        zone.mkdir()
        (zone / "energy_uj").write_text(f"{energy}\n")
        (zone / "max_energy_range_uj").write_text(f"{max_range}\n")


def test_rapl_sums_packages_ignores_subzones_and_handles_wraparound(tmp_path):
    _rapl_tree(
        tmp_path,
        {
            "intel-rapl:0": (999_000_000, 1_000_000_000),
            "intel-rapl:1": (5, 1_000_000_000),
            "intel-rapl:0:0": (7, 1_000_000_000),
        },
    )
    meter = RaplEnergyMeter(root=tmp_path)
    assert meter.source is EnergySource.RAPL
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("1000000\n")  # wrapped: 2_000_000 uJ later
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("2000005\n")
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("999999\n")  # subzone: already in package
    assert meter.read_j() == pytest.approx((2_000_000 + 2_000_000) / 1e6)


def test_rapl_unavailable_here_falls_back_to_model():
    """On this build machine /sys/class/powercap is absent, so detection must not claim a measurement."""
    if Path("/sys/class/powercap/intel-rapl:0/energy_uj").exists():
        pytest.skip("RAPL present on this machine")
    with pytest.raises(EnergyMeterUnavailable):
        RaplEnergyMeter()
    meter = detect_energy_meter((EnergySource.RAPL, EnergySource.MODEL), model_watts=300, model_utilisation=0.5)
    assert meter.source is EnergySource.MODEL


def test_modelled_meter_is_power_times_utilisation_times_time(clock):
    meter = ModelledEnergyMeter(watts=400.0, utilisation=0.25, clock=clock)
    clock.now = 2.5
    assert meter.read_j() == pytest.approx(250.0)
    assert meter.source is EnergySource.MODEL
    with pytest.raises(ValueError):
        ModelledEnergyMeter(watts=100.0, utilisation=1.5)


def test_detect_reports_every_reason_when_nothing_is_readable(tmp_path, monkeypatch):
    monkeypatch.setattr("cluster.telemetry.energy.POWERCAP_ROOT", tmp_path)
    try:
        meter = detect_energy_meter((EnergySource.NVML, EnergySource.RAPL))
    except EnergyMeterUnavailable as exc:
        assert "nvml" in str(exc) and "rapl" in str(exc)
    else:
        assert meter.source is EnergySource.NVML  # a GPU host


@pytest.mark.gpu
def test_nvml_meter_reads_real_gpu_energy():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pytest.skip("no NVIDIA GPU: NVML not available")
    meter = NvmlEnergyMeter()
    first = meter.read_j()
    second = meter.read_j()
    assert meter.source is EnergySource.NVML
    assert 0 <= first <= second


class FakeNvml:
    """pynvml's calls the meter makes, over a fake node of four GPUs whose counters the test sets (mJ)."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.uuids = [f"GPU-{i:04d}" for i in range(4)]
        self.energy_mj = [0, 0, 0, 0]

    def nvmlInit(self) -> None:
        return None

    def nvmlDeviceGetCount(self) -> int:
        return 4

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < 4:
            raise self.NVMLError(f"invalid index {index}")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        if uuid not in self.uuids:
            raise self.NVMLError(f"no device {uuid}")
        return self.uuids.index(uuid)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        return self.energy_mj[handle]


@pytest.mark.parametrize(("visible", "measured_j"), [
    ("1,3", 3.0 + 5.0),  # Ray gave this replica GPUs 1 and 3: only theirs counts
    ("GPU-0002", 4.0),  # named by UUID
    (None, 2.0 + 3.0 + 4.0 + 5.0),  # nothing set: the process owns every GPU
])
def test_the_nvml_meter_reads_only_the_gpus_this_replica_was_given(monkeypatch, visible, measured_j):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    meter = NvmlEnergyMeter()
    fake.energy_mj = [2000, 3000, 4000, 5000]
    assert meter.read_j() == pytest.approx(measured_j)


def test_a_replica_given_no_gpu_has_no_nvml_meter(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(EnergyMeterUnavailable, match="no GPU is assigned"):
        NvmlEnergyMeter()
    with pytest.raises(EnergyMeterUnavailable, match="no device GPU-9"):
        NvmlEnergyMeter(devices=["GPU-9"])
