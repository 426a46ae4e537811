"""Standalone GPU check of NVML energy metering and apportionment (not collected by pytest).

Runs three fake "requests" of fp16 matmuls of different sizes back to back on GPU 0, reads NVML's
cumulative energy around the whole batch and around each request, splits the batch total by engine
time with `apportion`, prints everything as JSON and asserts that the apportioned parts sum exactly
to the metered total. Sequential requests let us also show each one's directly metered energy next
to its apportioned share: the gap is what time-based apportionment gets wrong about power.

Needs only torch and nvidia-ml-py:
    PYTHONPATH=/path/to/slm-cascade python tests/cluster/telemetry/gpu_energy_check.py [--seconds 6]
"""

import argparse
import json
import math
import time

import torch

from cluster.telemetry.energy import NvmlEnergyMeter, apportion

REQUEST_SIZES = {"req-small": 1024, "req-medium": 4096, "req-large": 8192}  # square matmul side
SECONDS_SPLIT = {"req-small": 0.2, "req-medium": 0.3, "req-large": 0.5}  # of the total run time


def _matmuls(size: int, seconds: float) -> tuple[float, int]:
    """Matmuls for about `seconds`; returns (engine seconds, matmuls done)."""
    a = torch.randn(size, size, device="cuda", dtype=torch.float16)
    b = torch.randn(size, size, device="cuda", dtype=torch.float16)
    torch.cuda.synchronize()
    began, done = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        for _ in range(8):
            a @ b
        torch.cuda.synchronize()
        done += 8
    return time.perf_counter() - began, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="total matmul time")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA device visible to torch"
    torch.cuda.set_device(0)
    for size in REQUEST_SIZES.values():  # warm up kernels so the first request isn't charged for it
        _matmuls(size, 0.05)

    meter = NvmlEnergyMeter(devices=["0"])
    start_j = meter.read_j()
    requests = {}
    for name, size in REQUEST_SIZES.items():
        before_j = meter.read_j()
        engine_s, done = _matmuls(size, args.seconds * SECONDS_SPLIT[name])
        requests[name] = {
            "matmul_size": size,
            "matmuls": done,
            "engine_s": engine_s,
            "tflops": 2 * size**3 * done / engine_s / 1e12,
            "direct_nvml_j": meter.read_j() - before_j,
        }
    total_j = meter.read_j() - start_j

    parts = apportion(total_j, {name: r["engine_s"] for name, r in requests.items()})
    for name, joules in parts.items():
        requests[name]["apportioned_j"] = joules
    report = {
        "device": torch.cuda.get_device_name(0),
        "energy_source": meter.source.value,
        "total_j": total_j,
        "sum_apportioned_j": sum(parts.values()),
        "sum_direct_j": math.fsum(r["direct_nvml_j"] for r in requests.values()),
        "mean_power_w": total_j / sum(r["engine_s"] for r in requests.values()),
        "requests": requests,
    }
    print(json.dumps(report, indent=2))

    assert total_j > 0, "NVML energy counter did not move"
    assert sum(parts.values()) == total_j, "apportionment did not conserve the metered total"
    assert all(joules >= 0 for joules in parts.values())
    # per-request reads nearly telescope (only the instants between them are missing)
    assert abs(report["sum_direct_j"] - total_j) <= 0.05 * total_j, "per-request NVML reads disagree"
    print("OK: apportioned energy sums exactly to the NVML-metered total")


if __name__ == "__main__":
    main()
