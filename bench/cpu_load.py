"""A plain CPU load: B9's control.

    python -m bench.cpu_load CORES

Burns CORES of a core (at most one) until it is killed, and touches no file, socket or lock:
the job beside it slows only because the two share the CPU.
"""

from __future__ import annotations

import sys
import time

# The consumers' batch window: the load comes in bursts, as a consumer's batches do.
WINDOW_SECONDS = 0.1


def burn(cores: float) -> None:
    """In every window, spin until this process has used `cores` of it, then sleep to its end;
    a window the cores could not give it that much is not made up later."""
    while True:
        window_ends = time.monotonic() + WINDOW_SECONDS
        spent_at = time.process_time() + cores * WINDOW_SECONDS
        while time.process_time() < spent_at and time.monotonic() < window_ends:
            pass
        time.sleep(max(0.0, window_ends - time.monotonic()))


if __name__ == "__main__":
    burn(min(float(sys.argv[1]), 1.0))
