"""The local engine's thread count: measured on the first groups, kept, and restored after."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")

from gradcampp.engines.threads import ThreadChoice, chosen_threads  # noqa: E402


def run_groups(choice: ThreadChoice, slow: int, groups: int = 5) -> list[int]:
    """Counts used per group; a group run with ``slow`` threads takes 0.1 s longer."""
    used = []
    for _ in range(groups):
        with choice.group(4) as count:
            used.append(count)
            assert torch.get_num_threads() == count
            if count == slow:
                time.sleep(0.1)
    return used


@pytest.mark.parametrize(("slow", "kept"), [(2, 1), (1, 2)])
def test_the_faster_count_is_kept_after_measuring(slow, kept, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with chosen_threads() as choice:
        choice.many = 2  # as on a 2-core machine, whatever this one has
        # warm-up, then 2 threads, then 1, then the faster of the two
        assert run_groups(choice, slow) == [2, 2, 1, kept, kept]
        assert choice.chosen == kept and set(choice.timings) == {1, 2}
    assert torch.get_num_threads() == before  # PyTorch's setting restored


def test_a_given_count_or_omp_num_threads_is_respected(monkeypatch):
    with chosen_threads(3) as choice:
        assert run_groups(choice, slow=0, groups=3) == [3, 3, 3]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with chosen_threads() as choice:
        assert choice is None
    assert ThreadChoice(1).next_count() == 1  # one core: nothing to choose
    with pytest.raises(ValueError, match="positive integer, got 0"):
        ThreadChoice(2, 0)
