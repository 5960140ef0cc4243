"""Norm-preserving orthogonal noise (em_cli.comparison.perturbation)."""

from __future__ import annotations

import math

import pytest
import torch

from em_cli.comparison.perturbation import orthogonal_noise, perturb


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("shape", [(64,), (4, 64), (96, 8)])  # a vector, a LoRA A, a LoRA B
@pytest.mark.parametrize("epsilon", [0.0, 0.01, 0.05, 0.3, 0.7, 1.0])
def test_perturbation_keeps_the_norm_and_has_the_requested_cosine(shape, epsilon):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 3.0
    perturbed = perturb(x, epsilon, torch.Generator().manual_seed(7))
    assert perturbed.shape == x.shape and perturbed.dtype == x.dtype
    assert float(perturbed.norm()) == pytest.approx(float(x.norm()), rel=1e-6)
    assert _cosine(x, perturbed) == pytest.approx(math.sqrt(1 - epsilon**2), abs=1e-6)


def test_noise_is_orthogonal_gaussian_of_the_same_norm():
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(2))
    noise = orthogonal_noise(x, torch.Generator().manual_seed(3))
    assert noise.shape == x.shape
    assert float(noise.norm()) == pytest.approx(float(x.double().norm()), rel=1e-12)
    assert abs(_cosine(x, noise)) < 1e-9


def test_epsilon_zero_is_the_original_and_draws_are_seeded():
    x = torch.randn(50)
    assert torch.equal(perturb(x, 0.0, torch.Generator().manual_seed(0)), x)
    a = perturb(x, 0.5, torch.Generator().manual_seed(4))
    b = perturb(x, 0.5, torch.Generator().manual_seed(4))
    c = perturb(x, 0.5, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_input_and_bad_epsilon():
    zero = torch.zeros(8)
    assert torch.equal(perturb(zero, 0.5, torch.Generator().manual_seed(0)), zero)
    with pytest.raises(ValueError, match="epsilon"):
        perturb(torch.ones(3), 1.5, torch.Generator())
