"""Messages as a device sends them, for the tests and the station's benchmarks (plain and
typed, so a benchmark can import it without the tests' fixtures)."""

from __future__ import annotations

import json
import time

from edge.delivery.publisher import envelope
from edge.delivery.wire import Cycle, ModelRef, body_dict, iso_ms

TEST_EPOCH = "0123456789abcdef"  # a numbering epoch, as a device sends one


def cycle_message(device: str, seq: int) -> bytes:
    """A normal cycle that ended now."""
    t = time.time()
    body = Cycle(session_id="s1", start=iso_ms(t - 2), end=iso_ms(t), duration_s=2.0,
                 label="normal", probs={"normal": 0.9, "crackle": 0.1}, confidence=0.9,
                 quality=0.8, good=True, forced_cut=False, model=ModelRef("m", "1"),
                 latency_ms=400.0)
    return json.dumps(envelope(device, seq, TEST_EPOCH) | body_dict(body)).encode()
