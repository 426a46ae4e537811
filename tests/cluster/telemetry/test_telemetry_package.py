"""The package's public names resolve, and the energy module stays importable on its own."""

import subprocess
import sys

from cluster import telemetry


def test_every_public_name_resolves():
    assert sorted(telemetry.__all__) == sorted(telemetry._EXPORTS)
    for name in telemetry.__all__:
        assert getattr(telemetry, name) is not None


def test_energy_module_needs_no_telemetry_dependencies():
    probe = (
        "import sys, cluster.telemetry.energy; "
        "heavy = [m for m in ('opentelemetry', 'prometheus_client', 'pydantic', 'numpy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, env={"PYTHONPATH": ":".join(sys.path)})
