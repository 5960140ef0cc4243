"""Norm-preserving orthogonal noise (docs/METHODS.md §6, stability).

Draw y ~ N(0, I), remove its component along x (Gram–Schmidt), scale it to ‖x‖ and set
x′ = √(1−ε²)·x + ε·y. Then ‖x′‖ = ‖x‖ and cos(x, x′) = √(1−ε²): ε = 0 is x itself, ε = 1
an orthogonal vector of the same length. A matrix is treated as one flattened vector.

A LoRA adapter perturbed this way (A and B each with ε) changes its weight change B·A by
more: cos(B′A′, BA) ≈ 1−ε², so the stability metric measures that cosine
(`product_cosine`) rather than assuming √(1−ε²).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def orthogonal_noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian tensor shaped like `x`, orthogonal to it (flattened) and of the same norm,
    in float64 on the CPU. Zero if `x` is zero (there is no length to match)."""
    import torch

    flat = x.detach().reshape(-1).to("cpu", torch.float64)
    norm = flat.norm()
    if norm == 0:
        return torch.zeros_like(flat).reshape(x.shape)
    noise = torch.randn(flat.shape, generator=generator, dtype=torch.float64)
    unit = flat / norm
    noise = noise - (noise @ unit) * unit
    # Gram–Schmidt once more: one pass leaves ~1e-16 relative error, which is enough, but a
    # second pass costs nothing and keeps the cosine test exact for huge matrices too.
    noise = noise - (noise @ unit) * unit
    return (noise / noise.norm() * norm).reshape(x.shape)


def perturb(x: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """x′ = √(1−ε²)·x + ε·y with y from `orthogonal_noise`; same shape, dtype and device as x.

    Example: perturb(v, 0.1, torch.Generator().manual_seed(0)) has cosine √0.99 with v.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    import torch

    noise = orthogonal_noise(x, generator)
    mixed = math.sqrt(1.0 - epsilon**2) * x.detach().to("cpu", torch.float64) + epsilon * noise
    return mixed.to(dtype=x.dtype, device=x.device)


def cosine(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """cos(x, y) of the flattened tensors, in float64; None if either is zero."""
    import torch

    a = x.detach().reshape(-1).to("cpu", torch.float64)
    b = y.detach().reshape(-1).to("cpu", torch.float64)
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else None


def product_cosine(b1: torch.Tensor, a1: torch.Tensor, b0: torch.Tensor, a0: torch.Tensor) -> float | None:
    """cos(B₁A₁, B₀A₀) of two LoRA weight changes, flattened — without forming the
    [out, in] products: ⟨B₁A₁, B₀A₀⟩_F = tr((B₀ᵀB₁)(A₁A₀ᵀ)), with [r, r] factors. None if
    either product is zero."""
    import torch

    b1, a1, b0, a0 = (t.detach().to("cpu", torch.float64) for t in (b1, a1, b0, a0))

    def inner(bx: torch.Tensor, ax: torch.Tensor, by: torch.Tensor, ay: torch.Tensor) -> float:
        return float(torch.trace((by.T @ bx) @ (ax @ ay.T)))

    norms = inner(b1, a1, b1, a1) * inner(b0, a0, b0, a0)
    return inner(b1, a1, b0, a0) / norms**0.5 if norms > 0 else None
