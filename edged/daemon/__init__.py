"""The daemon process: lifetimes, signals and drain, status, HTTP, metrics, heartbeat, systemd."""
