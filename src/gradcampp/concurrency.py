"""One lock per model, held while an explanation changes the model's state.

A forward pass that gradcampp runs registers hooks (PyTorch) or shadows layer methods (Keras), and
switches PyTorch modules to eval mode; all of it is undone when the pass ends. Two explanations of
one model running at once in two threads would see each other's hooks and restore each other's
flags, so each such pass holds ``model_lock(model)``: passes over one model run one after the other,
passes over different models in parallel. The backward passes and the maths run outside the lock.

Hooks and shadowed methods act only in the thread that installed them. Other code that runs the
same model in another thread during an explanation's forward pass is not captured by them, but it
does find every module in eval mode for that moment (PyTorch); hold ``model_lock(model)`` around
such code (a training step, say) to keep the two apart.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The re-entrant lock that gradcampp holds while it runs a forward pass of ``model``.

    Args:
        model: a ``torch.nn.Module`` or ``keras.Model`` (any object that accepts weak
            references); the same object always gets the same lock.

    Returns:
        a ``threading.RLock``, usable as a context manager.

    Example:
        >>> import threading
        >>> class Net: ...
        >>> net = Net()
        >>> model_lock(net) is model_lock(net)
        True
    """
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock
