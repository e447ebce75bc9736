"""Real systemd test hosts (systemd-nspawn containers) for rollout tests; see hosts.py."""
