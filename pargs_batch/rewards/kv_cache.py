"""A transformers KV-cache layer over preallocated buffers, for reward models that keep each
sequence's KV state between decoding steps (the ``causal`` and ``autoregressive`` backends)."""

from __future__ import annotations

from transformers.cache_utils import DynamicLayer


class BufferedLayer(DynamicLayer):
    """A cache layer over preallocated key/value buffers (B, heads, capacity, head_dim).

    ``update`` writes a step's k candidate columns after the kept ``length`` and returns views, so
    scoring copies nothing of the prefix; ``keep_chosen`` copies one column per row. The buffer
    doubles when full (amortised O(1) per token)."""

    def adopt(self, spare: int) -> None:
        keys, values = self.keys, self.values
        self.length = keys.shape[2]
        self.kbuf = keys.new_empty(*keys.shape[:2], self.length + spare, keys.shape[3])
        self.vbuf = values.new_empty(self.kbuf.shape)
        self.kbuf[:, :, : self.length] = keys
        self.vbuf[:, :, : self.length] = values
        self._view()

    def _view(self) -> None:
        self.keys, self.values = self.kbuf[:, :, : self.length], self.vbuf[:, :, : self.length]

    def _reserve(self, end: int) -> None:
        if end > self.kbuf.shape[2]:
            self.resize(max(end, 2 * self.kbuf.shape[2]))

    def resize(self, capacity: int) -> None:
        grow = capacity - self.kbuf.shape[2]
        if grow > 0:
            pad = self.kbuf.new_empty(*self.kbuf.shape[:2], grow, self.kbuf.shape[3])
            self.kbuf, self.vbuf = torch_cat([self.kbuf, pad], 2), torch_cat([self.vbuf, pad.clone()], 2)

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[2]
        self._reserve(end)
        self.kbuf[:, :, self.length:end] = key_states
        self.vbuf[:, :, self.length:end] = value_states
        return self.kbuf[:, :, :end], self.vbuf[:, :, :end]

    def keep_chosen(self, rows, cols) -> None:
        """Column ``cols[b]`` (absolute) of row b becomes its next kept position."""
        k_col, v_col = self.kbuf[rows, :, cols], self.vbuf[rows, :, cols]  # gathered copies
        self.kbuf[:, :, self.length] = k_col
        self.vbuf[:, :, self.length] = v_col
        self.length += 1
        self._view()

    def select(self, idx, first: int) -> None:
        self.kbuf = self.kbuf[idx, :, first:]
        self.vbuf = self.vbuf[idx, :, first:]
        self.length -= first
        self._view()

    def left_pad(self, n: int) -> None:
        if n:
            pad = self.kbuf.new_zeros(*self.kbuf.shape[:2], n, self.kbuf.shape[3])
            self.kbuf, self.vbuf = torch_cat([pad, self.kbuf], 2), torch_cat([pad.clone(), self.vbuf], 2)
            self.length += n
            self._view()


def torch_cat(tensors, dim):
    import torch

    return torch.cat(tensors, dim=dim)


def left_padded(sequences: list[list[int]], pad_id: int):
    """(ids, mask) of ``sequences`` left-padded to the longest: each sequence's last token in the
    last column, so one forward's last position is every sequence's next-token position."""
    import torch

    width = max(len(p) for p in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for b, p in enumerate(sequences):
        ids[b, width - len(p):] = torch.tensor(p)
        mask[b, width - len(p):] = True
    return ids, mask


def stack_sessions(a_layers, b_layers, a_mask, b_mask):
    """Append b's rows to a's: every cache layer and the padding masks left-padded to a common
    length (a's layers take the result); returns the stacked mask."""
    import torch

    width = max(a_mask.shape[1], b_mask.shape[1])
    for la, lb in zip(a_layers, b_layers):
        la.left_pad(width - la.length)
        lb.left_pad(width - lb.length)
        size = max(la.kbuf.shape[2], lb.kbuf.shape[2])
        la.resize(size)
        lb.resize(size)
        la.kbuf, la.vbuf = torch.cat([la.kbuf, lb.kbuf]), torch.cat([la.vbuf, lb.vbuf])
        la._view()

    def pad(mask):
        n = width - mask.shape[1]
        return mask if n == 0 else torch.cat([mask.new_zeros((mask.shape[0], n)), mask], 1)

    return torch.cat([pad(a_mask), pad(b_mask)])
