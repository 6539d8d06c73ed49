"""lungedge: a streaming lung-sound classifier for a Raspberry Pi beside a digital stethoscope."""

__version__ = "0.1.0"
