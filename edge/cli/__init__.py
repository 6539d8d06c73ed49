"""The `lungedge` command and its offline tools: classify recordings, plot them, monitor a
broker, check a config. Nothing below imports it."""
