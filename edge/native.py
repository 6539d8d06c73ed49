"""What native libraries print on the process's own standard error, kept out of a person's way.

TensorFlow Lite prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on every model
load, and PortAudio's ALSA and JACK back ends print some 65 lines of probing before `lungedge
devices` can answer. Neither goes through Python's logging, so the file descriptor itself is
redirected while they run; what they printed is then passed on as debug log lines (seen with
`lungedge -v`), and anything that does not look like such noise (a real error) is written to
standard error as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger(__name__)

# lines native libraries print that are noise to a person: TFLite's INFO, ALSA's and JACK's
# probing of devices that are not there
NOISE = re.compile(r"^(INFO: |ALSA lib |Cannot connect to server|jack server|JackShmReadWritePtr"
                   r"|Expression 'alsa_snd|Expression 'paInvalid|Cannot lock down|"
                   r"connect\(2\) call to)")


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Standard error (the descriptor) captured while the block runs: noise becomes debug
    log lines, anything else is written out again."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real descriptor (a test's capture)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if NOISE.search(line):
                    log.debug("%s", line)
                elif line.strip():
                    print(line, file=sys.stderr)
