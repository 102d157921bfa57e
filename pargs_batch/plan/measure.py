"""Measured peaks, to check the memory plan against: the most bytes torch held at once during a call.

On CUDA torch's allocator keeps the peak (``torch.cuda.max_memory_allocated``). On CPU it keeps
nothing, so ``LiveBytes`` counts it the way the allocator would: every tensor storage an operator
allocates is added when it is made and taken off when it is freed (a weak reference to the
storage), and the highest total is the peak. Views and in-place results share a storage their
inputs already had and add nothing; weights and inputs made before the count are not counted.
"""

from __future__ import annotations

import weakref


def live_bytes_mode():
    """A ``LiveBytes`` dispatch mode (torch imported here, so importing this module stays light)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveBytes(TorchDispatchMode):
        """``with LiveBytes() as m: f()``; then ``m.peak`` is the most bytes the storages that ``f``
        allocated held at once, ``m.now`` what is still held."""

        def __init__(self):
            super().__init__()
            self.now = self.peak = 0
            self._held: dict[int, tuple[int, weakref.ref]] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            seen = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                    if isinstance(t, torch.Tensor) and not t.is_meta}
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and not t.is_meta:
                    storage = t.untyped_storage()
                    ptr = storage.data_ptr()
                    if ptr and ptr not in seen and ptr not in self._held:
                        self._add(ptr, storage)
            return out

        def _add(self, ptr: int, storage) -> None:
            size = storage.nbytes()
            self._held[ptr] = (size, weakref.ref(storage, lambda _, ptr=ptr: self._free(ptr)))
            self.now += size
            self.peak = max(self.peak, self.now)

        def _free(self, ptr: int) -> None:
            size, _ = self._held.pop(ptr, (0, None))
            self.now -= size

    return LiveBytes()


def peak_bytes(fn, device: str = "cpu") -> int:
    """The most bytes ``fn()`` held at once above what was allocated when it began."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    with live_bytes_mode() as mode:
        fn()
    return int(mode.peak)
