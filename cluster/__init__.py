"""Configuration, the local cluster, the CLI, telemetry and accounting: everything at the edges."""
