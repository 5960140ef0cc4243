"""The two loss terms: assistant-token cross-entropy and KL to the original model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from em_cli.training.data import IGNORE

if TYPE_CHECKING:
    import torch


def assistant_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the tokens whose label is not IGNORE."""
    import torch.nn.functional as F

    shifted = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


def kl_positions_mask(attention_mask: torch.Tensor, labels: torch.Tensor, positions: str) -> torch.Tensor:
    """Which next-token distributions the KL term compares: every non-padding position
    ("all", the paper's choice) or the positions that predict assistant tokens."""
    import torch

    if positions == "all":
        return attention_mask.bool()
    predicts_assistant = torch.zeros_like(attention_mask, dtype=torch.bool)
    predicts_assistant[:, :-1] = labels[:, 1:] != IGNORE
    return predicts_assistant


def kl_to_reference(policy_logits: torch.Tensor, reference_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token mean of KL(P_ref ‖ P_θ) in nats over the positions in `mask`."""
    import torch

    ref = torch.log_softmax(reference_logits.float(), dim=-1)
    pol = torch.log_softmax(policy_logits.float(), dim=-1)
    per_token = (ref.exp() * (ref - pol)).sum(dim=-1)
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
