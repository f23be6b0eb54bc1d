"""The published scaling laws and LLaMA 2's training cost: the closed-form compute-optimal model
against a plain numerical minimisation, Chinchilla's Table 3 against 6ND, LLaMA 2's Table 2
GPU-hours against 6ND at the A100's peak, our models' parameter counts, and the lifetime-optimal
(over-trained) model against the compute-optimal one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llama_from_scratch.model.config import preset
from llama_from_scratch.model.parameters import count_parameters
from llama_from_scratch.scaling.compute import (
    A100_BF16, LLAMA2_PRETRAINING, exact_training_flops, gpu_hours, implied_utilisation,
    lifetime_flops, llama2_costs, overtraining, smallest_for_loss, tokens_per_parameter,
    training_flops)
from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.laws import (
    CHINCHILLA, CHINCHILLA_TABLE3, EPOCH, LAWS, Law, compute_optimal, exponents, golden_minimum,
    numerical_optimum)

BUDGETS = [1e15, 1e18, 1.92e19, 1e21, 5.76e23, 1e26, 1.3e28]


def test_law_constants_and_loss_by_hand():
    assert LAWS == {"chinchilla": CHINCHILLA, "epoch": EPOCH}
    assert (CHINCHILLA.E, CHINCHILLA.A, CHINCHILLA.B, CHINCHILLA.alpha, CHINCHILLA.beta) == (
        1.69, 406.4, 410.7, 0.34, 0.28)
    assert (EPOCH.E, EPOCH.A, EPOCH.B, EPOCH.alpha, EPOCH.beta) == (
        1.8172, 482.01, 2085.43, 0.3478, 0.3658)
    by_hand = 1.69 + 406.4 / 1e9**0.34 + 410.7 / 2e10**0.28
    assert CHINCHILLA.loss(1e9, 2e10) == pytest.approx(by_hand, rel=1e-14)
    assert isinstance(CHINCHILLA.loss(1e9, 2e10), float)
    grid = EPOCH.loss(np.array([[1e8], [1e10]]), np.array([1e10, 1e11, 1e12]))
    assert grid.shape == (2, 3)
    assert grid[1, 2] == pytest.approx(1.8172 + 482.01 / 1e10**0.3478 + 2085.43 / 1e12**0.3658)
    assert np.all(np.diff(grid, axis=0) < 0) and np.all(np.diff(grid, axis=1) < 0)


@pytest.mark.parametrize("law", [CHINCHILLA, EPOCH], ids=lambda law: law.name)
def test_closed_form_equals_the_numerical_minimum(law):
    for flops in BUDGETS:
        n, d = compute_optimal(law, flops)
        assert 6 * n * d == pytest.approx(flops, rel=1e-12)
        n_num, d_num = numerical_optimum(law, flops)
        assert n_num == pytest.approx(n, rel=1e-4) and d_num == pytest.approx(d, rel=1e-4)
        # ... and it is a minimum: 1% either way along the budget costs loss
        for step in (0.99, 1.01):
            assert law.loss(n * step, d / step) > law.loss(n, d)


def test_compute_optimal_takes_arrays():
    n, d = compute_optimal(CHINCHILLA, np.array(BUDGETS))
    assert n.shape == d.shape == (len(BUDGETS),)
    assert n[4] == compute_optimal(CHINCHILLA, 5.76e23)[0]


def test_gophers_budget_under_chinchillas_fitted_constants_is_32b_not_67b():
    n, d = compute_optimal(CHINCHILLA, 5.76e23)
    assert n == pytest.approx(32.19e9, rel=1e-3)
    assert d == pytest.approx(2.982e12, rel=1e-3)
    n_epoch, _ = compute_optimal(EPOCH, 5.76e23)
    assert n_epoch == pytest.approx(72.2e9, rel=1e-2)  # the refit is close to Table 3's 67B


def test_exponents_match_the_slope_of_the_numerical_optimum():
    a, b = exponents(CHINCHILLA)
    assert a == pytest.approx(0.28 / 0.62, rel=1e-12) and b == pytest.approx(0.34 / 0.62, rel=1e-12)
    assert exponents(EPOCH)[0] == pytest.approx(0.5126, abs=1e-4)
    for law in LAWS.values():
        (n1, d1), (n2, d2) = numerical_optimum(law, 1e20), numerical_optimum(law, 1e24)
        slope_n = math.log(n2 / n1) / math.log(1e4)
        slope_d = math.log(d2 / d1) / math.log(1e4)
        assert (slope_n, slope_d) == pytest.approx(exponents(law), abs=1e-5)


def test_table3_is_6nd_at_20_tokens_per_parameter_with_one_inconsistent_row():
    ratios = {row.params: row.flops / (6 * row.params * row.tokens) for row in CHINCHILLA_TABLE3}
    # Tokens are printed to one decimal place (3.7T: +-1.4%), so 6ND matches to 1.5% ...
    assert all(abs(r - 1) < 0.015 for p, r in ratios.items() if p != 67e9), ratios
    # ... except 67B: 1.5T gives 4.5% too many FLOPs; 1.43T (printed 1.4T) would fit.
    assert 1 - ratios[67e9] == pytest.approx(0.0448, abs=1e-3)
    rows = np.array(CHINCHILLA_TABLE3)
    assert np.all((rows[:, 2] / rows[:, 0] > 19.9) & (rows[:, 2] / rows[:, 0] < 22.5))
    slope = np.polyfit(np.log(rows[:, 1]), np.log(rows[:, 0]), 1)[0]
    assert slope == pytest.approx(0.50, abs=0.01)  # Approach 1's a, not the fitted law's 0.45
    assert slope - exponents(CHINCHILLA)[0] > 0.04


def test_llama2_gpu_hours_imply_about_40_percent_utilisation():
    seven = LLAMA2_PRETRAINING["7B"]
    by_hand = 6 * 6_738_415_616 * 2.0e12 / (184_320 * 3600 * 312e12)
    assert implied_utilisation(seven.params, seven.tokens, seven.gpu_hours) == pytest.approx(
        by_hand, rel=1e-12)
    assert 0.39 < by_hand < 0.40
    assert gpu_hours(seven.params, seven.tokens, by_hand) == pytest.approx(184_320, rel=1e-12)
    assert training_flops(seven.params, seven.tokens) == pytest.approx(8.086e22, rel=1e-3)
    rows = {row["name"]: row for row in llama2_costs()}
    assert [rows[k]["gpu_hours"] for k in ("7B", "13B", "34B", "70B")] == [
        184_320, 368_640, 1_038_336, 1_720_320]
    assert sum(row["gpu_hours"] for row in rows.values()) == pytest.approx(3.3e6, rel=0.01)
    for row in rows.values():
        assert 0.33 < row["utilisation"] < 0.45
    assert "exact_flops" not in rows["34B"]  # never released: no shape to count


@pytest.mark.parametrize("name, published", [("7B", 6.74e9), ("13B", 13.0e9), ("70B", 69.0e9)])
def test_parameter_counts_are_our_models(name, published):
    args = preset(name, vocab_size=32000)
    counted = count_parameters(args)
    assert LLAMA2_PRETRAINING[name].params == counted
    assert counted == pytest.approx(published, rel=3e-3)
    assert LLAMA2_PRETRAINING[name].preset == name


def test_attention_at_4096_tokens_adds_a_few_percent_over_6n():
    args = preset("7B", vocab_size=32000)
    n, tokens, seq = count_parameters(args), 2.0e12, 4096
    exact = exact_training_flops(args, tokens, seq)
    # Matmul weights are all but the embedding table and the norms; attention's scores and
    # weighted values cost 2 d (T + 1) per layer per token forward (causal), 3x for training.
    weights = n - args.vocab_size * args.dim - (2 * args.n_layers + 1) * args.dim
    by_hand = 6 * weights * tokens + 3 * 2 * args.n_layers * args.dim * (seq + 1) * tokens
    assert exact == by_hand
    assert exact / training_flops(n, tokens) == pytest.approx(1.060, abs=1e-3)
    row = llama2_costs()[0]
    assert row["exact_flops"] == exact and row["exact_utilisation"] > row["utilisation"]


def test_overtraining_places_llama2_past_compute_optimal():
    seven = LLAMA2_PRETRAINING["7B"]
    assert tokens_per_parameter(seven.params, seven.tokens) == pytest.approx(296.8, rel=1e-3)
    for law in LAWS.values():
        out = overtraining(law, seven.params, seven.tokens)
        assert 6 * out["params_opt"] * out["tokens_opt"] == pytest.approx(out["flops"], rel=1e-12)
        assert out["tokens_ratio"] > 1.5 and out["params_ratio"] < 0.6
        assert out["tokens_ratio"] * out["params_ratio"] == pytest.approx(1.0, rel=1e-12)
        assert out["loss"] > out["loss_opt"]
        assert out["loss"] == pytest.approx(law.loss(seven.params, seven.tokens), rel=1e-14)
    assert overtraining(CHINCHILLA, seven.params, seven.tokens)["tokens_ratio"] == pytest.approx(
        1.968, rel=1e-3)


def test_lifetime_flops_by_hand():
    assert lifetime_flops(7e9, 2e12, 1e13) == 6 * 7e9 * 2e12 + 2 * 7e9 * 1e13
    assert lifetime_flops(7e9, 2e12, 0.0) == training_flops(7e9, 2e12)


@pytest.mark.parametrize("law", [CHINCHILLA, EPOCH], ids=lambda law: law.name)
def test_without_inference_the_cheapest_model_for_a_loss_is_compute_optimal(law):
    for flops in (1e20, 5.76e23, 1e26):
        n, d = compute_optimal(law, flops)
        loss = law.loss(n, d)
        n0, d0 = smallest_for_loss(law, loss, 0.0)
        assert n0 == pytest.approx(n, rel=1e-3) and d0 == pytest.approx(d, rel=1e-3)
        assert law.loss(n0, d0) == pytest.approx(loss, rel=1e-12)
        # The argmin of 6ND on the iso-loss curve: 2% either way costs FLOPs.
        for step in (0.98, 1.02):
            d_step = (law.B / (loss - law.E - law.A / (n0 * step) ** law.alpha)) ** (1 / law.beta)
            assert 6 * n0 * step * d_step > 6 * n0 * d0


@pytest.mark.parametrize("law", [CHINCHILLA, EPOCH], ids=lambda law: law.name)
def test_serving_many_tokens_moves_the_optimum_to_a_smaller_longer_trained_model(law):
    n, d = compute_optimal(law, 5.76e23)
    loss = law.loss(n, d)
    sizes = []
    for served in (1e12, 1e13, 1e15):
        n1, d1 = smallest_for_loss(law, loss, served)
        assert law.loss(n1, d1) == pytest.approx(loss, rel=1e-12)  # still on the iso-loss curve
        assert n1 < n and d1 > d
        assert lifetime_flops(n1, d1, served) < lifetime_flops(n, d, served)
        sizes.append(n1)
    assert sizes[0] > sizes[1] > sizes[2]
    # The floor: no model smaller than (A / (loss - E))^(1 / alpha) reaches the loss at all.
    assert sizes[2] > (law.A / (loss - law.E)) ** (1 / law.alpha)


def test_golden_minimum_finds_a_known_minimum():
    assert golden_minimum(lambda x: (x - 1.234) ** 2 + 3.0, -10.0, 10.0) == pytest.approx(1.234, abs=1e-7)
    assert golden_minimum(lambda x: math.cosh(x + 7.5), -8.0, 3.0, grid=5) == pytest.approx(-7.5, abs=1e-7)


@pytest.mark.parametrize("flops", [0.0, -1e20, math.inf, math.nan])
def test_bad_budgets_raise(flops):
    with pytest.raises(ScalingError, match="compute budget must be a positive finite"):
        compute_optimal(CHINCHILLA, flops)
    with pytest.raises(ScalingError, match="compute budget"):
        numerical_optimum(EPOCH, flops)


def test_bad_input_raises_with_what_to_do():
    with pytest.raises(ScalingError, match="not above .* irreducible loss E = 1.69"):
        smallest_for_loss(CHINCHILLA, 1.69)
    with pytest.raises(ScalingError, match="irreducible"):
        smallest_for_loss(EPOCH, 1.0, 1e12)
    with pytest.raises(ScalingError, match="inference_tokens must be finite and >= 0"):
        smallest_for_loss(CHINCHILLA, 2.0, -1.0)
    with pytest.raises(ScalingError, match="alpha must be a positive"):
        Law(1.7, 400.0, 400.0, 0.0, 0.3, "flat")
    with pytest.raises(ScalingError, match="E .* must be finite and >= 0"):
        Law(-0.1, 400.0, 400.0, 0.3, 0.3)
    with pytest.raises(ScalingError, match="parameters and tokens must be positive"):
        CHINCHILLA.loss(0.0, 1e9)
    with pytest.raises(ScalingError, match="gpu_hours must be a positive"):
        implied_utilisation(7e9, 2e12, 0.0)
    with pytest.raises(ScalingError, match="utilisation must be a positive"):
        gpu_hours(7e9, 2e12, 0.0, A100_BF16)
    with pytest.raises(ScalingError, match="params must be a positive"):
        training_flops(-7e9, 2e12)
