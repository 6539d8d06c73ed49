"""Getting the pipeline's events off the device: the wire format (one dataclass per message
body, with generated JSON Schemas), the events encoded as messages, the on-disk spool and the
MQTT publisher that drains it, evidence clips, Home Assistant discovery. The daemon sees only
`Publisher`."""
