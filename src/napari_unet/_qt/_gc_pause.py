"""Short garbage collections while the panels' jobs run.

Python's cyclic garbage collector stops every thread while it walks the objects it tracks. A
napari window with torch loaded tracks about 430,000 of them, so a full (oldest-generation)
collection holds the GUI for 0.2-0.3 s on an idle 2-core machine and for 0.2-0.6 s when the
machine is busy (``benchmarks/bench_responsiveness.py``, *full GC* and *longest GC* columns). A
fine-tuning run allocates enough (events, model copies for previews, layer updates) to set one
off within seconds.

While at least one job runs, the objects that existed when the first one started are moved to
the collector's permanent generation (:func:`gc.freeze`), so a full collection walks only what
was made since; when the last job ends they are handed back (:func:`gc.unfreeze`) and the next
full collection, at a moment the collector chooses, frees whatever of them became garbage in
the meantime (a layer the user deleted during a long fine-tune, say), napari's own when the
viewer closes at the latest; the panels' handlers on Qt's ``destroyed`` are methods for that
reason (:mod:`~napari_unet._qt._disconnect`). A freeze made by someone else (the application,
another plugin) is left alone: nothing is frozen or unfrozen here then.
"""

from __future__ import annotations

import gc
import threading

#: ``False`` turns the freeze off (for measuring what it does: ``bench_responsiveness.py
#: --no-gc-freeze``)
ENABLED = True

_lock = threading.Lock()
_jobs = 0
_froze = False


def job_started() -> None:
    """A job starts: freeze the heap if it is the first one running."""
    global _jobs, _froze
    with _lock:
        _jobs += 1
        if _jobs == 1 and ENABLED and gc.get_freeze_count() == 0:
            gc.freeze()
            _froze = True


def job_ended() -> None:
    """A job ended: unfreeze the heap if it was the last one running and this module froze it."""
    global _jobs, _froze
    with _lock:
        if _jobs == 0:
            return
        _jobs -= 1
        if _jobs == 0 and _froze:
            gc.unfreeze()
            _froze = False


def jobs_running() -> int:
    """How many jobs hold the heap frozen now."""
    return _jobs
