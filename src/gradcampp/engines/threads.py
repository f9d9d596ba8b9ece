"""How many threads PyTorch uses in the local engine, measured on the machine the run is on.

PyTorch's intra-op threads default to the number of cores. When other work shares those cores,
its threads wait for each other at every operator's barrier, and a run can be several times
slower with all cores than with one: on a shared 2-core machine, ResNet-18 explained a batch of 8
in 0.94 s with one thread and 2.94 s with two (load average 10;
``benchmarks/results/threads_busy.md``). An idle machine gains from every core. Which is faster
is therefore measured, not assumed: the local engine times one group of images with the default
number of threads and one with a single thread (after a first, unmeasured group that warms up),
then keeps the faster for the rest of the run, and restores PyTorch's setting at the end.

The choice is left alone when the user made it: with ``OMP_NUM_THREADS`` set in the environment,
or a ``threads`` count given to the engine.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class ThreadChoice:
    """Measure, group by group, whether one thread or the default count explains faster.

    Use ``with choice.group(n_images): ...`` around each group's work. Groups 1 and 2 (after
    a warm-up group 0) run with ``many`` threads and with one; from group 3 on, the count with
    the lower time per image. ``chosen`` is None until then.

    Args:
        many: the default thread count (PyTorch's, usually the number of cores).
        fixed: a count to use throughout instead of measuring (None: measure).
    """

    def __init__(self, many: int, fixed: int | None = None):
        if fixed is not None and fixed < 1:
            raise ValueError(f"threads must be a positive integer, got {fixed}")
        self.many = max(1, int(many))
        self.chosen: int | None = fixed if fixed is not None else (1 if self.many == 1 else None)
        self.timings: dict[int, float] = {}  # threads -> seconds per image
        self._groups = 0

    def next_count(self) -> int:
        """The thread count for the next group."""
        if self.chosen is not None:
            return self.chosen
        return 1 if self._groups == 2 else self.many

    @contextmanager
    def group(self, images: int) -> Iterator[int]:
        """Run one group of ``images`` with the thread count this choice gives (yielded)."""
        torch = sys.modules.get("torch")
        count = self.next_count()
        if torch is not None:
            torch.set_num_threads(count)
        start = time.perf_counter()
        yield count
        seconds = time.perf_counter() - start
        if self.chosen is None and self._groups in (1, 2) and images > 0:
            self.timings[count] = seconds / images
            if len(self.timings) == 2:
                self.chosen = min(self.timings, key=lambda n: (self.timings[n], n))
        self._groups += 1


@contextmanager
def chosen_threads(threads: int | None = None) -> Iterator[ThreadChoice | None]:
    """A ``ThreadChoice`` for a run of a PyTorch model, PyTorch's own count restored after it.

    Yields None (nothing to choose) when PyTorch is not loaded, or when ``OMP_NUM_THREADS`` is set
    and no ``threads`` was given.
    """
    torch = sys.modules.get("torch")
    if torch is None or (threads is None and os.environ.get("OMP_NUM_THREADS")):
        yield None
        return
    before = torch.get_num_threads()
    try:
        yield ThreadChoice(before, threads)
    finally:
        torch.set_num_threads(before)
