"""The two loss terms: assistant-token cross-entropy and KL to the original model.

Both need next-token distributions at only some positions (those that predict answer
tokens, or the KL positions). `logits_at` runs the decoder trunk once and applies the
output head to just those positions, instead of materialising [batch, seq, vocab] logits —
with a 50k vocabulary that tensor (and its softmax) dominates CPU training time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from em_cli.models.layers import unwrap
from em_cli.training.data import IGNORE

if TYPE_CHECKING:
    import torch


def predicts_assistant(labels: torch.Tensor) -> torch.Tensor:
    """[batch, seq] bool: position t predicts an assistant token (label t+1 is not IGNORE)."""
    import torch

    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def logits_at(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              positions: torch.Tensor) -> torch.Tensor:
    """Float32 next-token logits [n_selected, vocab] at the `positions` ([batch, seq] bool)."""
    import torch

    causal = unwrap(model)
    trunk, head = causal.get_decoder(), causal.get_output_embeddings()
    hidden = trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    logits = head(hidden[positions]).float()
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def assistant_cross_entropy(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the assistant tokens of a padded batch."""
    import torch.nn.functional as F

    labels = batch["labels"]
    positions = predicts_assistant(labels)
    logits = logits_at(model, batch["input_ids"], batch["attention_mask"], positions)
    targets = labels[:, 1:][positions[:, :-1]]
    return F.cross_entropy(logits, targets)


def kl_positions_mask(attention_mask: torch.Tensor, labels: torch.Tensor, positions: str) -> torch.Tensor:
    """Which next-token distributions the KL term compares: every non-padding position
    ("all", the paper's choice) or the positions that predict assistant tokens."""
    if positions == "all":
        return attention_mask.bool()
    return predicts_assistant(labels)


def kl_divergence(policy_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(P_ref ‖ P_θ) in nats, for [n, vocab] logits."""
    import torch

    ref = torch.log_softmax(reference_logits.float(), dim=-1)
    pol = torch.log_softmax(policy_logits.float(), dim=-1)
    return (ref.exp() * (ref - pol)).sum(dim=-1).mean()


def kl_to_reference(policy_logits: torch.Tensor, reference_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token mean of KL(P_ref ‖ P_θ) over the positions in `mask`, for [batch, seq, vocab]
    logits (used where full logits already exist, e.g. comparing solutions)."""
    return kl_divergence(policy_logits[mask.bool()], reference_logits[mask.bool()])
