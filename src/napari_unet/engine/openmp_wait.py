"""How long torch's OpenMP threads spin before they sleep: short, so that a busy machine is not
slowed further.

torch's CPU kernels run on an OpenMP thread pool (GNU libgomp in the Linux wheels). Between two
parallel regions each thread spins, by libgomp's default, for 300,000 iterations before it
sleeps. On a machine whose cores are also busy with other work (a laptop running other programs,
a shared server) those spinning threads take the turns the working thread needs. With two other
processes loading both cores of a 2-core machine, segmenting 20 planes of 128 x 160 px took
2.1x as long with libgomp's default spin as with this one, and 10 training steps 1.7x; idle,
this spin cost 6-9 % (``benchmarks/bench_openmp_wait.py``, docs/benchmarks/openmp_wait.md).

libgomp reads ``GOMP_SPINCOUNT`` once, when torch loads it, so :func:`shorten_spin` must run
before ``import torch``: ``napari_unet`` calls it on import. A value the user set is kept.
"""

from __future__ import annotations

import os
import sys

#: libgomp's spins before a waiting thread sleeps (its default: 300,000)
SPIN_COUNT = "10000"


def shorten_spin() -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` unless the user set it, or torch (and with it
    its OpenMP runtime) is already loaded, where it would change nothing. Returns whether it
    was set."""
    if "GOMP_SPINCOUNT" in os.environ or "torch" in sys.modules:
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True
