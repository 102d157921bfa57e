"""`autoregressive` mode: a causal LM π_r as the reward model, r(x, y) = Σ_t log π_r(y_t | x, y<t),
trained with the Bradley–Terry loss on that sum,

    loss = -log σ(s · (r(x, y_w) - r(x, y_l)))      (s: ``autoregressive_scale``)

(the autoregressive reward model of GenARM, Xu et al., ICLR 2025). One forward per sequence gives
every token's log-probability, so a pair costs two ordinary LM forwards. The checkpoint is a causal
LM whose config records ``pargs_batch_reward: {kind: autoregressive, scale}``;
``reward.backend: autoregressive`` scores with it (``pargs_batch.rewards.autoregressive``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rm_training.causal import pad_pairs

MARKER = "pargs_batch_reward"  # as pargs_batch.rewards.autoregressive reads it


@dataclass
class SequenceCollator:
    """Chosen then rejected sequences, right-padded into one batch, with where each response starts."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict:
        input_ids, attention_mask = pad_pairs(examples, self.pad_token_id)
        starts = [e["chosen_start"] for e in examples] + [e["rejected_start"] for e in examples]
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "response_starts": torch.tensor(starts, dtype=torch.long)}


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      starts: torch.Tensor) -> torch.Tensor:
    """(rows,) Σ log π(y_t | x, y<t) over each row's response tokens (positions >= its start)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    token = torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    position = torch.arange(1, input_ids.shape[1], device=input_ids.device)[None, :]
    response = (position >= starts[:, None]) & attention_mask[:, 1:].bool()
    return (token * response).sum(1)


def autoregressive_loss(model, batch: dict, scale: float) -> tuple[torch.Tensor, dict]:
    """Mean of -log σ(s · (r(y_w) - r(y_l))) over the batch's pairs."""
    r = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["response_starts"])
    n = r.shape[0] // 2
    margin = r[:n] - r[n:]
    loss = -F.logsigmoid(scale * margin).mean()
    return loss, {"accuracy": (margin > 0).float().mean().item(), "margin": margin.mean().item()}


def mark_checkpoint(out_dir: str, scale: float, template: str) -> None:
    """Record in the checkpoint's config what it is, for the scorer and `pargs-batch init`."""
    path = Path(out_dir) / "config.json"
    config = json.loads(path.read_text())
    config[MARKER] = {"kind": "autoregressive", "scale": scale}
    config["pargs_batch_input"] = {"input": "template", "template": template}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
