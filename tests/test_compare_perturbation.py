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


def test_product_cosine_matches_the_flattened_products():
    from em_cli.comparison.perturbation import cosine, product_cosine

    g = torch.Generator().manual_seed(5)
    b0, a0 = torch.randn(40, 3, generator=g), torch.randn(3, 30, generator=g)
    b1, a1 = b0 + 0.3 * torch.randn(40, 3, generator=g), a0 + 0.3 * torch.randn(3, 30, generator=g)
    reference = cosine(b1.double() @ a1.double(), b0.double() @ a0.double())
    assert product_cosine(b1, a1, b0, a0) == pytest.approx(reference, abs=1e-12)
    assert product_cosine(b0, a0, b0, a0) == pytest.approx(1.0, abs=1e-12)
    assert product_cosine(torch.zeros(40, 3), a0, b0, a0) is None


@pytest.mark.parametrize("epsilon", [0.1, 0.3, 0.5, 0.7])
def test_perturbing_both_lora_factors_moves_the_product_by_about_one_minus_eps_squared(epsilon):
    from em_cli.comparison.perturbation import product_cosine

    g = torch.Generator().manual_seed(11)
    b, a = torch.randn(512, 8, generator=g), torch.randn(8, 512, generator=g)
    noise = torch.Generator().manual_seed(12)
    measured = product_cosine(perturb(b, epsilon, noise), perturb(a, epsilon, noise), b, a)
    assert measured == pytest.approx(1 - epsilon**2, abs=0.03)
    if epsilon >= 0.3:  # clearly not the √(1−ε²) a single perturbed matrix has
        assert measured < math.sqrt(1 - epsilon**2) - 0.03
