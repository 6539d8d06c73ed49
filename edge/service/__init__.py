"""The always-on device service: its configuration (deployment only: what decides a label
travels with the model), the daemon that wires source → pipeline → delivery, its health,
logs, self-measurement, systemd notifications and the checks before it starts."""
