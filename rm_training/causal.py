"""`partial-causal` mode: Eq. 5 over every prefix length from one forward pass per sequence.

A causal reward model (GPT-2, Llama, Qwen sequence-classification heads) computes its reward head
at every position; the reward of prefix y[:i] is the head's output at the prefix's last token,
which depends only on tokens up to it. So one pass over x + y_w and one over x + y_l give the
rewards of all prefixes, and the loss averages -log sigma(r(y_w[:i]) - r(y_l[:i])) over all prefix
lengths i (a response shorter than i counts whole; identical prefixes are left out), in O(L)
instead of O(L^2) work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prefix_positions(chosen_start: int, chosen_len: int, rejected_start: int, rejected_len: int,
                     same_prompt: bool, common: int) -> tuple[list[int], list[int]]:
    """Token positions whose head outputs are r(y_w[:i]) and r(y_l[:i]), for the non-identical i.

    ``*_len`` count response tokens; ``common`` is the length of the responses' shared opening.
    """
    pos_c, pos_r = [], []
    for i in range(1, max(chosen_len, rejected_len) + 1):
        ic, ir = min(i, chosen_len), min(i, rejected_len)
        if same_prompt and ic == ir and ic <= common:
            continue  # the two prefixes are the same tokens: no preference
        pos_c.append(chosen_start + ic - 1)
        pos_r.append(rejected_start + ir - 1)
    return pos_c, pos_r


def right_padded(seqs: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of token sequences right-padded to the longest."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        input_ids[row, : len(s)] = torch.tensor(s)
        attention_mask[row, : len(s)] = 1
    return input_ids, attention_mask


def pad_pairs(examples: list[dict], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen then rejected sequences of ``examples``, right-padded into one batch: (ids, mask)."""
    return right_padded([e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples], pad_token_id)


@dataclass
class CausalPrefixCollator:
    """Pads chosen and rejected sequences into one batch (chosen first) and lists prefix positions."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict:
        input_ids, attention_mask = pad_pairs(examples, self.pad_token_id)
        rows, pos_c, pos_r = [], [], []
        for b, e in enumerate(examples):
            cs, rs = e["chosen_start"], e["rejected_start"]
            c_resp, r_resp = e["chosen_ids"][cs:], e["rejected_ids"][rs:]
            same_prompt = e["chosen_ids"][:cs] == e["rejected_ids"][:rs]
            pc, pr = prefix_positions(cs, len(c_resp), rs, len(r_resp), same_prompt,
                                      common_prefix(c_resp, r_resp))
            rows += [b] * len(pc)
            pos_c += pc
            pos_r += pr
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "pair_rows": torch.tensor(rows, dtype=torch.long),
                "chosen_positions": torch.tensor(pos_c, dtype=torch.long),
                "rejected_positions": torch.tensor(pos_r, dtype=torch.long)}


def reward_head(model) -> torch.nn.Module:
    """The per-position reward head (`score`) of a causal sequence-classification model."""
    inner = getattr(model, "module", model)  # DeepSpeed / DDP wrappers
    head = getattr(inner, "score", None)
    if not isinstance(head, torch.nn.Module):
        raise ValueError(f"{type(inner).__name__} has no per-position `score` head; partial-causal mode "
                         "needs a causal sequence-classification model (GPT-2, Llama, Qwen, Mistral, ...)")
    return head


def token_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(rows, T) reward-head outputs at every position, from one ordinary forward of ``model``.

    The head's output is caught with a forward hook, so the call goes through the model's own
    forward (and through DeepSpeed's engine when wrapped).
    """
    captured = {}
    handle = reward_head(model).register_forward_hook(lambda m, i, out: captured.setdefault("out", out))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        handle.remove()
    return captured["out"][..., 0]


def partial_causal_loss(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Mean of -log sigma(r(y_w[:i]) - r(y_l[:i])) over every (pair, prefix length) in the batch."""
    rewards = token_rewards(model, batch["input_ids"], batch["attention_mask"])
    n_pairs = rewards.shape[0] // 2
    rows = batch["pair_rows"]
    r_c = rewards[rows, batch["chosen_positions"]]
    r_r = rewards[n_pairs + rows, batch["rejected_positions"]]
    margin = r_c - r_r
    loss = -F.logsigmoid(margin).mean()
    return loss, {"accuracy": (margin > 0).float().mean().item(), "margin": margin.mean().item()}


def expanded_prefix_loss(model, examples: list[dict]) -> torch.Tensor:
    """The same loss the slow way: every prefix pair as its own sequence, pooled at its last token.

    For tests and for checking a model: O(L^2) work, one forward per prefix.
    """
    terms = []
    for e in examples:
        cs, rs = e["chosen_start"], e["rejected_start"]
        c, r = e["chosen_ids"], e["rejected_ids"]
        pc, pr = prefix_positions(cs, len(c) - cs, rs, len(r) - rs, c[:cs] == r[:rs],
                                  common_prefix(c[cs:], r[rs:]))
        for a, b in zip(pc, pr):
            rc = model(input_ids=torch.tensor([c[: a + 1]])).logits[0, 0]
            rr = model(input_ids=torch.tensor([r[: b + 1]])).logits[0, 0]
            terms.append(-F.logsigmoid(rc - rr))
    return torch.stack(terms).mean()
