"""The station's web UI: one module per resource (ward, devices, alerts, analyse, events,
session), the app that joins them, its templates and its one script."""
