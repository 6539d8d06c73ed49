"""The analysis of the sound: features → the model → the tracker, one object used by the
device, the trainer's evaluation and the station alike. It emits its own domain events
(cycles, alerts, sessions) and knows nothing of how they are delivered or configured."""
