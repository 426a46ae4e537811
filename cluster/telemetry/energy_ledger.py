"""Per-request energy from a replica-wide meter, conserving what the meter measured.

A meter (NVML, RAPL or the power model) reads one counter for the whole replica, while requests overlap in
the engine's batches. The ledger settles the counter at every request start and finish and splits each
interval's energy equally among the requests open during it (the engine batches them together, so each
holds an equal slot of the batch). The per-request figures therefore sum exactly to the energy metered
while the replica was busy; energy metered while idle belongs to no request and is kept apart as `idle_j`.
"""

from __future__ import annotations

import threading
from typing import Any

from cluster.telemetry.energy import EnergyMeter, apportion


class EnergyLedger:
    def __init__(self, meter: EnergyMeter) -> None:
        self._meter = meter
        self._lock = threading.Lock()
        self._last_j = meter.read_j()
        self._open: dict[Any, float] = {}
        self.idle_j = 0.0

    @property
    def source(self) -> str:
        return str(self._meter.source)

    def start(self, request_id: Any) -> None:
        with self._lock:
            self._settle()
            self._open[request_id] = 0.0

    def finish(self, request_id: Any) -> float:
        """The request's energy in joules; it stops accruing."""
        with self._lock:
            self._settle()
            return self._open.pop(request_id)

    def _settle(self) -> None:
        reading = self._meter.read_j()
        delta, self._last_j = max(reading - self._last_j, 0.0), reading
        if not self._open:
            self.idle_j += delta
            return
        for request_id, joules in apportion(delta, dict.fromkeys(self._open, 1.0)).items():
            self._open[request_id] += joules
