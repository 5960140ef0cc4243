"""The two loss terms: assistant-token cross-entropy and KL to the original model.

Both need next-token distributions at only some positions (those that predict answer
tokens, or the KL positions). `logits_at` runs the decoder trunk once and applies the
output head to just those positions, instead of materialising [batch, seq, vocab] logits —
with a 50k vocabulary that tensor (and its softmax) dominates CPU training time.

Some models do more than apply the head: Cohere multiplies the logits by `logit_scale`,
Granite divides them by `logits_scaling`. So the shortcut is checked once per model against
the model's own forward (`logits_path`); where they differ, logits come from the model's own
forward, restricted to the needed sequence columns.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from em_cli.models.layers import unwrap
from em_cli.training.data import IGNORE

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
SPARSE, OWN = "sparse", "model"
# KL rows go through in chunks of at most this many tokens (rows × padded length), so that the
# KL term holds one chunk's activations and full-vocabulary logits at a time (docs/METHODS.md §3.3).
KL_CHUNK_TOKENS = 512
_announced: set[str] = set()


def predicts_assistant(labels: torch.Tensor) -> torch.Tensor:
    """[batch, seq] bool: position t predicts an assistant token (label t+1 is not IGNORE)."""
    import torch

    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def logits_at(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              positions: torch.Tensor) -> torch.Tensor:
    """Float32 next-token logits [n_selected, vocab] at the `positions` ([batch, seq] bool),
    equal to the model's own forward logits there."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    causal = unwrap(inner)
    if inner is not model:
        # Under `accelerate launch` (DDP) the wrapper's own forward must run: it is what makes
        # backward average the gradients across processes. The trunk-only shortcut bypasses it.
        return _own_logits_at(causal, input_ids, attention_mask, positions, call=model)
    if logits_path(causal) == OWN:
        return _own_logits_at(causal, input_ids, attention_mask, positions)
    return _sparse_logits_at(causal, input_ids, attention_mask, positions)


def logits_path(model: Any) -> str:
    """SPARSE when the output head applied to selected hidden states reproduces the model's own
    logits, else OWN. Checked once per model (on a few tokens, in eval mode) and remembered."""
    causal = unwrap(model)
    path = getattr(causal, "_em_logits_path", None)
    if path is None:
        path = SPARSE if _sparse_matches_own(causal) else OWN
        causal._em_logits_path = path
        name = type(causal).__name__
        if path == OWN and name not in _announced:
            _announced.add(name)
            log.info("%s post-processes its logits in its own forward (e.g. a logit scale); em computes "
                     "losses through the model's own forward for it (slower)", name)
    return path


def _sparse_matches_own(causal: Any) -> bool:
    import torch

    device = next(causal.parameters()).device
    vocab = causal.config.get_text_config().vocab_size
    ids = ((torch.arange(8, device=device) * 7919 + 11) % vocab).unsqueeze(0)
    mask = torch.ones_like(ids)
    everywhere = torch.ones_like(ids, dtype=torch.bool)
    was_training = causal.training
    causal.eval()
    try:
        with torch.no_grad():
            own = causal(input_ids=ids, attention_mask=mask).logits[0].float()
            sparse = _sparse_logits_at(causal, ids, mask, everywhere)
    finally:
        causal.train(was_training)
    # Same arithmetic either way, but half-precision matmuls of other shapes may round differently.
    tolerance = 1e-4 if own.dtype == torch.float32 and _compute_dtype(causal) == torch.float32 else 2e-2
    return bool((own - sparse).abs().max() <= tolerance * max(float(own.abs().max()), 1.0))


def _compute_dtype(causal: Any) -> Any:
    return next(causal.parameters()).dtype


def _own_logits_at(causal: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   positions: torch.Tensor, call: Any = None) -> torch.Tensor:
    """The model's own forward, with logits only for the sequence columns that are needed.
    `call` is what to run (a distributed wrapper around `causal`); by default `causal` itself."""
    call = causal if call is None else call
    columns = positions.any(dim=0).nonzero().squeeze(-1)
    if "logits_to_keep" in inspect.signature(causal.forward).parameters:
        logits = call(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=columns,
                      use_cache=False).logits
    else:
        logits = call(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, columns]
    return logits[positions[:, columns]].float()


def _sparse_logits_at(causal: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      positions: torch.Tensor) -> torch.Tensor:
    import torch

    trunk, head = causal.get_decoder(), causal.get_output_embeddings()
    # No key/value cache: training never decodes, and the cache would copy every layer's keys and values.
    hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    logits = head(hidden[positions]).float()
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def assistant_cross_entropy(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the assistant tokens of a padded batch."""
    total, count = cross_entropy_sum(model, batch)
    return total / count


def cross_entropy_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the labelled tokens of a padded batch, and how
    many tokens that is (so that losses can be pooled over tokens across batches)."""
    import torch.nn.functional as F

    labels = batch["labels"]
    positions = predicts_assistant(labels)
    logits = logits_at(model, batch["input_ids"], batch["attention_mask"], positions)
    targets = labels[:, 1:][positions[:, :-1]]
    return F.cross_entropy(logits, targets, reduction="sum"), int(targets.numel())


def kl_positions_mask(attention_mask: torch.Tensor, labels: torch.Tensor, positions: str) -> torch.Tensor:
    """Which next-token distributions the KL term compares: every non-padding position
    ("all", the paper's choice), the positions that predict assistant tokens ("assistant"), or
    only the position that predicts each row's first assistant token ("answer-start", where a
    style or persona is chosen; docs/METHODS.md §8)."""
    if positions == "all":
        return attention_mask.bool()
    assistant = predicts_assistant(labels)
    if positions == "answer-start":
        return assistant & (assistant.cumsum(dim=1) == 1)
    return assistant


def kl_divergence(policy_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(P_ref ‖ P_θ) in nats, for [n, vocab] logits."""
    import torch

    return kl_sum(policy_logits, torch.log_softmax(reference_logits.float(), dim=-1)) / policy_logits.shape[0]


def kl_sum(policy_logits: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
    """Sum over rows of KL(P_ref ‖ P_θ) in nats, for [n, vocab] policy logits and reference
    log-probabilities, with its gradient written out (`_kl_function`)."""
    return _kl_function().apply(policy_logits, reference_logprobs)


@functools.cache
def _kl_function() -> Any:
    """Σ P_ref·(log P_ref − log_softmax(z)) as one autograd step whose backward is the closed
    form ∂/∂z = softmax(z)·ΣP_ref − P_ref (per row). Autograd through the same expression keeps
    more [n, vocab] tensors and walks them more often: at 512 positions × SmolLM2's 49k
    vocabulary, forward and backward took 0.88 s against 0.63 s this way on 2 CPU cores."""
    import torch

    class KLFromLogits(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, logits: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
            policy = torch.log_softmax(logits.float(), dim=-1)
            reference = reference_logprobs.float()
            probabilities = reference.exp()
            total = torch.dot(probabilities.reshape(-1), (reference - policy).reshape(-1))
            ctx.save_for_backward(policy, probabilities)
            ctx.logits_dtype = logits.dtype
            return total

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            policy, probabilities = ctx.saved_tensors
            mass = probabilities.sum(dim=-1, keepdim=True)  # 1 up to rounding
            grad_logits = policy.exp().mul_(mass).sub_(probabilities).mul_(grad)
            return grad_logits.to(ctx.logits_dtype), None

    return KLFromLogits


def kl_row_chunks(attention_mask: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive row ranges [start, end) of a right-padded batch, each as large as fits in
    `budget` tokens counted with padding (rows × the chunk's longest row); a row longer than
    `budget` is a chunk of its own."""
    chunks: list[tuple[int, int]] = []
    start, longest = 0, 0
    for row, length in enumerate(attention_mask.sum(dim=1).tolist()):
        if row > start and (row - start + 1) * max(longest, length) > budget:
            chunks.append((start, row))
            start, longest = row, 0
        longest = max(longest, length)
    if attention_mask.shape[0]:
        chunks.append((start, attention_mask.shape[0]))
    return chunks


def backpropagate_kl(model: Any, batch: dict[str, torch.Tensor], positions: torch.Tensor,
                     reference: Callable[[], AbstractContextManager], weight: float,
                     backward: Callable[[torch.Tensor], None] | None = None,
                     chunk_tokens: int = KL_CHUNK_TOKENS) -> float:
    """The per-token mean of KL(P_ref ‖ P_θ) over `positions` ([batch, seq] bool) of a
    right-padded batch, with `weight` × its gradient added to the trained parameters' .grad.

    Rows go through in chunks of at most `chunk_tokens` tokens (`kl_row_chunks`): reference
    log-probabilities (no gradient, inside `reference()`, which switches the solution off),
    then the policy's logits and a backward pass (`backward`, default `Tensor.backward`), so
    that only one chunk's activations and [positions, vocab] logits exist at a time. Each
    chunk's KL sum is divided by the batch's total positions: the gradient is that of the
    unchunked mean. Returns the (unweighted) mean as a float.

        value = backpropagate_kl(model, batch, mask, solution.disabled, weight=0.5)
    """
    import torch

    total_positions = int(positions.sum())
    if total_positions == 0:
        return 0.0
    backward = backward or torch.Tensor.backward
    total = 0.0
    for start, end in kl_row_chunks(batch["attention_mask"], chunk_tokens):
        width = int(batch["attention_mask"][start:end].sum(dim=1).max())
        ids, mask = batch["input_ids"][start:end, :width], batch["attention_mask"][start:end, :width]
        chosen = positions[start:end, :width]
        if not chosen.any():
            continue
        with torch.no_grad(), reference():
            reference_logprobs = torch.log_softmax(logits_at(model, ids, mask, chosen), dim=-1)
        part = kl_sum(logits_at(model, ids, mask, chosen), reference_logprobs)
        del reference_logprobs
        backward(part * (weight / total_positions))
        total += float(part.detach())
    return total / total_positions


def kl_to_reference(policy_logits: torch.Tensor, reference_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token mean of KL(P_ref ‖ P_θ) over the positions in `mask`, for [batch, seq, vocab]
    logits (used where full logits already exist, e.g. comparing solutions)."""
    return kl_divergence(policy_logits[mask.bool()], reference_logits[mask.bool()])
