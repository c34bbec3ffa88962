"""Worker processes that end with the process that started them.

A process pool's workers wait on a pipe for their next task. When the main process is killed
outright (SIGKILL), nothing closes that pipe for them: without help they would finish their task,
writing into an output that no one will publish, then wait for ever. ``exit_with_parent``, called
in a pool's initializer, ends a worker shortly after its parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

_POLL_SECONDS = 0.2


def exit_with_parent() -> None:
    """End this worker process (exit status 1) within a fraction of a second of its parent's end.

    A no-op in a process that multiprocessing did not start. The check runs in a daemon thread:
    the worker's parent changes (to init or a subreaper) when the process that started it ends.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    parent_pid = parent.pid

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
