"""Facts about this machine that the pipeline acts on: whether a process lives, how many CPU cores are free."""

import os


def process_alive(pid: int) -> bool:
    """Whether a process of this machine is still running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
