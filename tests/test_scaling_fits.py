"""The scaling-law fits on synthetic sweeps drawn from a KNOWN law, so every fit can be checked
against the truth: Kaplan's power laws, Chinchilla's approaches 1, 2 and 3, bootstrap intervals,
and each bad input's error."""

from __future__ import annotations

import json
import math
from functools import partial

import numpy as np
import pytest
import torch

from llama_from_scratch.scaling.bootstrap import bootstrap, optimal_params, optimal_params_intervals
from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.isoflop import approach1, approach2
from llama_from_scratch.scaling.parametric import (fit_gradient, fit_parametric, huber_objective,
                                                   initial_grid)
from llama_from_scratch.scaling.powerlaw import PowerLaw, fit_power_law, kaplan_constant, kaplan_fits
from llama_from_scratch.scaling.records import check_records, group_by_budget, load_runs

E, A, B, ALPHA, BETA = 1.8, 400.0, 2000.0, 0.34, 0.37
A_TRUE = BETA / (ALPHA + BETA)  # N_opt ~ C^a
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
BUDGETS = (1e18, 1e19, 1e20, 1e21)


def true_loss(n, d):
    return E + A / n**ALPHA + B / d**BETA


def true_n_opt(c):
    return G * (c / 6) ** A_TRUE


def isoflop_sweep(noise: float = 0.0, seed: int = 0) -> list[dict]:
    """4 budgets x 7 sizes, 2x apart and centred on each budget's true optimum; the loss times
    exp(noise * standard normal)."""
    rng = np.random.default_rng(seed)
    records = []
    for c in BUDGETS:
        for k in range(-3, 4):
            n = true_n_opt(c) * 2.0**k
            d = c / (6 * n)
            loss = true_loss(n, d) * math.exp(noise * rng.standard_normal())
            records.append({"params": n, "tokens": d, "flops": 6 * n * d, "loss": loss, "budget": c})
    return records


def curve_sweep(sizes: int = 25) -> list[dict]:
    """`sizes` models from 1e7 to 1e10 parameters, each with a 60-point curve up to 3e12 tokens whose
    points follow the law (as if every point were the end of its own run: no schedule bias)."""
    records = []
    for n in np.geomspace(1e7, 1e10, sizes):
        seen = np.geomspace(1e8, 3e12, 60)
        losses = true_loss(n, seen)
        records.append({"params": float(n), "tokens": float(seen[-1]), "flops": float(6 * n * seen[-1]),
                        "loss": float(losses[-1]), "curve": [[float(t), float(x)] for t, x in zip(seen, losses)]})
    return records


# --- records ---------------------------------------------------------------------------------------

def test_load_runs_reads_a_list_or_a_runs_object(tmp_path):
    records = isoflop_sweep()[:3]
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.json").write_text(json.dumps({"runs": records, "command": "sweep"}))
    assert load_runs(tmp_path / "a.json") == records == load_runs(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"params": 1}')
    with pytest.raises(ScalingError, match="expected a JSON list"):
        load_runs(tmp_path / "c.json")
    with pytest.raises(ScalingError, match="no runs file"):
        load_runs(tmp_path / "missing.json")


@pytest.mark.parametrize("field, value, message", [
    ("loss", None, 'run 2 has no "loss"'),
    ("loss", -0.5, 'run 2 has "loss" = -0.5'),
    ("params", 0, 'run 2 has "params" = 0'),
    ("tokens", float("nan"), 'run 2 has "tokens" = nan'),
    ("flops", "1e18", "run 2 has \"flops\" = '1e18'"),
])
def test_check_records_names_the_run_and_the_field(field, value, message):
    records = isoflop_sweep()
    if value is None:
        del records[2][field]
    else:
        records[2][field] = value
    with pytest.raises(ScalingError, match=message):
        check_records(records, 6, "approach 3")
    check_records(isoflop_sweep(), 6, "approach 3")  # the clean sweep passes


def test_check_records_counts_the_points():
    with pytest.raises(ScalingError, match="approach 3 .* needs at least 6 runs, got 3"):
        fit_parametric(isoflop_sweep()[:3])


def test_budgets_come_from_the_budget_key_or_clustered_flops():
    """0.98e12 and 1.02e12 are one budget (rounding to 2 digits would split them), 3.04e12 another;
    a "budget" key wins over the FLOPs."""
    records = [{"flops": 1.02e12}, {"flops": 0.98e12}, {"flops": 3.04e12}, {"flops": 5e11, "budget": 1e12},
               {"flops": 2.9e12}]
    groups = group_by_budget(records)
    assert list(groups) == pytest.approx([math.sqrt(0.98e12 * 1.02e12), 1e12, math.sqrt(2.9e12 * 3.04e12)])
    assert [len(g) for g in groups.values()] == [2, 1, 2]
    with pytest.raises(ScalingError, match='run 0 has "budget" = -1'):
        group_by_budget([{"flops": 1.0, "budget": -1}])


# --- power laws --------------------------------------------------------------------------------------

def test_fit_power_law_recovers_an_exact_law():
    x = np.random.default_rng(0).uniform(1e3, 1e9, size=12)
    law = fit_power_law(x, 7.5 * x**-0.076)
    assert law.coefficient == pytest.approx(7.5, rel=1e-9)
    assert law.exponent == pytest.approx(-0.076, rel=1e-9)
    assert law(1e6) == pytest.approx(7.5 * 1e6**-0.076, rel=1e-9)


def test_kaplan_constant_is_kaplans_form():
    """Kaplan et al. (2020) eq. 1.1: L(N) = (8.8e13 / N)^0.076, i.e. coefficient 8.8e13^0.076."""
    law = PowerLaw(8.8e13**0.076, -0.076)
    assert kaplan_constant(law) == pytest.approx(8.8e13, rel=1e-9)
    assert law(1e9) == pytest.approx((8.8e13 / 1e9) ** 0.076, rel=1e-12)


def test_kaplan_fits_use_the_frontiers():
    """L(N) on each size's best run, L(D) on the envelope (a longer run that did worse does not
    count), L(C) on each budget's best run: all three exact laws come back to 1e-9."""
    records = []
    for n in (1e5, 1e6, 1e7):
        for d, extra in ((1e8, 0.3), (1e9, 0.1), (1e10, 0.0)):  # the longest run is each size's best
            records.append({"params": n, "tokens": d, "flops": 6 * n * d, "loss": 5 * n**-0.07 + extra})
    fits = kaplan_fits(records)
    assert (fits["N"].coefficient, fits["N"].exponent) == pytest.approx((5, -0.07), rel=1e-9)

    by_tokens = [{"tokens": d, "loss": 4 * d**-0.09} for d in (1e6, 1e7, 1e8, 1e9)]
    by_tokens.append({"tokens": 1e10, "loss": 4 * 1e9**-0.09 + 0.5})  # worse than 1e9: envelope
    fits = kaplan_fits([{**r, "params": 1e6 * (i + 1), "flops": 6e6 * (i + 1) * r["tokens"]}
                        for i, r in enumerate(by_tokens)])
    expected = fit_power_law([1e6, 1e7, 1e8, 1e9, 1e10], [4 * d**-0.09 for d in (1e6, 1e7, 1e8, 1e9, 1e9)])
    assert fits["D"] == expected and fits["D"].exponent != pytest.approx(-0.09, abs=1e-3)

    by_budget = [{"params": n, "tokens": c / (6 * n), "flops": c * 1.01, "budget": c,
                  "loss": 6 * c**-0.05 * (1 + abs(math.log(n / c**0.5)))}
                 for c in (1e12, 1e14, 1e16) for n in (c**0.5 / 10, c**0.5, c**0.5 * 10)]
    fits = kaplan_fits(by_budget)
    assert (fits["C"].coefficient, fits["C"].exponent) == pytest.approx((6, -0.05), rel=1e-9)


@pytest.mark.parametrize("x, y, message", [
    ([1.0], [2.0], "at least 2 points, got 1"),
    ([1.0, -2.0], [2.0, 1.0], r"x\[1\] = -2.0 has no logarithm"),
    ([1.0, 2.0], [0.0, 1.0], r"y\[0\] = 0.0 has no logarithm"),
    ([3.0, 3.0], [2.0, 1.0], "every x is 3"),
])
def test_fit_power_law_refuses_bad_points(x, y, message):
    with pytest.raises(ScalingError, match=message):
        fit_power_law(x, y)


# --- approach 2 ------------------------------------------------------------------------------------------

def test_approach2_recovers_the_exponent():
    """Noise-free, a comes back to 1e-9: at fixed C the valley L(N) has the same shape in ln N for
    every budget (both terms scale as C^(-alpha beta / (alpha + beta))), so the parabola misses the
    true minimum by the same factor (here 0.983) at every budget and the slope is exact."""
    fit = approach2(isoflop_sweep())
    assert fit["a"] == pytest.approx(A_TRUE, abs=1e-9) and fit["b"] == pytest.approx(1 - A_TRUE, abs=1e-9)
    ratios = [m["params"] / true_n_opt(m["flops"]) for m in fit["minima"]]
    assert ratios == pytest.approx([ratios[0]] * 4, rel=1e-9) and ratios[0] == pytest.approx(1, abs=0.02)
    minimum = fit["minima"][1]
    assert minimum["flops"] == 1e19 and minimum["tokens"] == pytest.approx(1e19 / (6 * minimum["params"]))
    assert np.polyval(minimum["parabola"], math.log(minimum["params"])) == pytest.approx(minimum["loss"])
    assert minimum["loss"] == pytest.approx(true_loss(true_n_opt(1e19), 1e19 / 6 / true_n_opt(1e19)), rel=1e-3)
    # 0.5% noise on each loss: within 0.02 (seeds 0-4 of this sweep land within 0.011).
    assert approach2(isoflop_sweep(noise=0.005))["a"] == pytest.approx(A_TRUE, abs=0.02)


def test_approach2_bad_budgets():
    records = isoflop_sweep()
    with pytest.raises(ScalingError, match="at least 2 compute budgets"):
        approach2(records[:7])
    middle = sorted(r["params"] for r in records if r["budget"] == 1e19)[2:4]
    two_sizes = [r for r in records if r["budget"] != 1e19 or r["params"] in middle]
    with pytest.raises(ScalingError, match="budget 1e\\+19 FLOPs has 2 model sizes: a parabola needs at least 3"):
        approach2(two_sizes)
    hump = [{**r, "loss": 10 - r["loss"]} if r["budget"] == 1e20 else r for r in records]
    with pytest.raises(ScalingError, match="budget 1e\\+20 FLOPs: the parabola .* opens downwards"):
        approach2(hump)


def test_approach2_leaves_out_a_minimum_outside_the_sizes_trained():
    records = isoflop_sweep()
    # at 1e21 keep only the 4 largest sizes: the true minimum lies below them all
    shifted = [r for r in records if r["budget"] != 1e21 or r["params"] > true_n_opt(1e21) * 1.5]
    fit = approach2(shifted)
    outside = [m for m in fit["minima"] if m["extrapolated"]]
    assert [m["flops"] for m in outside] == [1e21] and not outside[0]["params"] > true_n_opt(1e21) * 1.5 * 0.999
    assert fit["a"] == pytest.approx(A_TRUE, abs=1e-9)  # from the three budgets that bracket their minimum
    lonely = [r for r in shifted if r["budget"] in (1e20, 1e21)]
    lonely = [r for r in lonely if r["budget"] != 1e20 or r["params"] > true_n_opt(1e20) * 1.5]
    with pytest.raises(ScalingError, match="only 0 of 2 budgets have their parabola's minimum inside"):
        approach2(lonely)


# --- approach 1 ------------------------------------------------------------------------------------------

def test_approach1_recovers_the_exponent_from_curves():
    """25 sizes over 3 decades (1.33x apart): N_opt is quantised to the sizes, yet a comes within
    0.005; with 15 sizes (1.64x apart) the steps are coarser (measured 0.514), within 0.01."""
    fit = approach1(curve_sweep(25))
    assert fit["a"] == pytest.approx(A_TRUE, abs=0.005)
    assert approach1(curve_sweep(15))["a"] == pytest.approx(A_TRUE, abs=0.01)
    inner = [e for e in fit["envelope"] if not e["edge"]]
    assert len(inner) >= 10
    for point in inner:  # the winner is the size that is best at that C, checked by brute force
        sizes = np.geomspace(1e7, 1e10, 25)
        covered = sizes[point["flops"] / (6 * sizes) <= 3e12 * (1 + 1e-12)]
        assert point["params"] == pytest.approx(covered[np.argmin(true_loss(covered, point["flops"] / (6 * covered)))],
                                                rel=1e-9)
    assert any(e["edge"] for e in fit["envelope"])  # the largest size wins at the top of the range


def test_approach1_without_curves_is_the_best_final_run_per_budget():
    fit = approach1(isoflop_sweep())
    assert [e["flops"] for e in fit["envelope"]] == list(BUDGETS)
    assert [e["params"] for e in fit["envelope"]] == pytest.approx([true_n_opt(c) for c in BUDGETS])
    assert fit["a"] == pytest.approx(A_TRUE, abs=1e-9)
    with pytest.raises(ScalingError, match="not a list of \\[tokens_seen, loss\\] pairs"):
        approach1([{**r, "curve": [[1, 2, 3]]} for r in curve_sweep(3)])
    with pytest.raises(ScalingError, match="0 envelope points away from the smallest and largest"):
        approach1(curve_sweep(2))


# --- approach 3 ------------------------------------------------------------------------------------------

def test_huber_objective_by_hand():
    """3 runs: residuals -0.0005 (quadratic: 0.5 r^2), +0.01 (linear: delta (|r| - delta / 2)), 0."""
    runs = [(1e8, 2e9, -0.0005), (1e9, 1e10, 0.01), (3e7, 5e8, 0.0)]
    observed = [math.log(true_loss(n, d)) - r for n, d, r in runs]
    expected = 0.5 * 0.0005**2 + 1e-3 * (0.01 - 0.0005) + 0.0
    theta = torch.tensor([math.log(A), math.log(B), math.log(E), ALPHA, BETA], dtype=torch.float64)
    column = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    value = huber_objective(theta, column([math.log(n) for n, _, _ in runs]),
                            column([math.log(d) for _, d, _ in runs]), column(observed))
    assert float(value) == pytest.approx(expected, rel=1e-9)
    grid = initial_grid()
    assert grid.shape == (5400, 5)
    batched = huber_objective(grid[:7], *(column(v) for v in ([math.log(n) for n, _, _ in runs],
                                                              [math.log(d) for _, d, _ in runs], observed)))
    for row, total in zip(grid[:7], batched):
        single = huber_objective(row, column([math.log(n) for n, _, _ in runs]),
                                 column([math.log(d) for _, d, _ in runs]), column(observed))
        assert float(total) == pytest.approx(float(single), rel=1e-12)


def test_approach3_recovers_the_law_noise_free():
    torch.set_num_threads(1)
    records = isoflop_sweep()
    fit = fit_parametric(records)
    assert fit["alpha"] == pytest.approx(ALPHA, abs=1e-4) and fit["beta"] == pytest.approx(BETA, abs=1e-4)
    assert (fit["E"], fit["A"], fit["B"]) == pytest.approx((E, A, B), rel=1e-3)
    assert fit["objective"] < 1e-12
    assert np.abs(fit_gradient(fit, records)).max() < 1e-6


def test_approach3_with_noise_is_a_local_minimum_near_the_truth():
    """0.5% noise: alpha and beta within 0.03 (seeds 0-4 of 1% noise land within 0.035); the
    gradient is ~0 and a step in any direction of (a, b, e, alpha, beta) raises the objective."""
    torch.set_num_threads(1)
    records = isoflop_sweep(noise=0.005)
    fit = fit_parametric(records, starts=5)
    assert fit["alpha"] == pytest.approx(ALPHA, abs=0.03) and fit["beta"] == pytest.approx(BETA, abs=0.03)
    assert np.abs(fit_gradient(fit, records)).max() < 1e-8
    column = lambda key: torch.tensor([math.log(r[key]) for r in records], dtype=torch.float64)  # noqa: E731
    theta = torch.tensor([math.log(fit["A"]), math.log(fit["B"]), math.log(fit["E"]), fit["alpha"], fit["beta"]],
                         dtype=torch.float64)
    at = float(huber_objective(theta, column("params"), column("tokens"), column("loss")))
    assert at == pytest.approx(fit["objective"], rel=1e-9)
    for i in range(5):
        for step in (-1e-3, 1e-3):
            moved = theta.clone()
            moved[i] += step
            assert float(huber_objective(moved, column("params"), column("tokens"), column("loss"))) > at


def test_approach3_needs_two_sizes():
    records = [{**r, "params": 1e8} for r in isoflop_sweep()]
    with pytest.raises(ScalingError, match='at least 2 different "params"'):
        fit_parametric(records)


# --- bootstrap ---------------------------------------------------------------------------------------------

def test_bootstrap_percentiles_by_hand_and_skips():
    """A fit of the mean loss that refuses resamples holding run 0: replaying the same draws by
    hand gives the same percentiles and the same skip count."""
    records = isoflop_sweep(noise=0.01)

    def mean_loss(sample):
        if any(r is records[0] for r in sample):
            raise ScalingError("run 0 drawn")
        return {"mean": float(np.mean([r["loss"] for r in sample])), "label": "not a number"}

    result = bootstrap(records, mean_loss, n=50, seed=3)
    rng = np.random.default_rng(3)
    means, skipped = [], 0
    for _ in range(50):
        draw = rng.integers(0, len(records), size=len(records))
        if 0 in draw:
            skipped += 1
        else:
            means.append(np.mean([records[i]["loss"] for i in draw]))
    assert result["skipped"] == skipped > 0
    assert result["mean"] == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)), rel=1e-12)
    assert set(result) == {"mean", "skipped"}
    with pytest.raises(ScalingError, match="only 0 of 5 bootstrap resamples"):
        bootstrap(records, lambda sample: (_ for _ in ()).throw(ScalingError("no")), n=5)


def test_bootstrap_within_budgets_keeps_every_budget_whole():
    sizes = lambda sample: {"smallest": min(len(g) for g in group_by_budget(sample).values()),  # noqa: E731
                            "budgets": len(group_by_budget(sample))}
    result = bootstrap(isoflop_sweep(), sizes, n=20, by_budget=True)
    assert result["smallest"] == (7, 7) and result["budgets"] == (4, 4)


def test_bootstrap_intervals_contain_the_truth_and_repeat():
    torch.set_num_threads(1)
    records = isoflop_sweep(noise=0.005, seed=1)
    fit = partial(fit_parametric, starts=2)
    first = bootstrap(records, fit, n=12, seed=0, keys=["alpha", "beta"])
    assert first == bootstrap(records, fit, n=12, seed=0, keys=["alpha", "beta"])
    assert first["alpha"][0] <= ALPHA <= first["alpha"][1] and first["beta"][0] <= BETA <= first["beta"][1]
    assert first["alpha"][1] - first["alpha"][0] < 0.1
    a_interval = bootstrap(records, approach2, n=100, seed=0, keys=["a"], by_budget=True)
    assert a_interval["a"][0] <= A_TRUE <= a_interval["a"][1]
    assert a_interval != bootstrap(records, approach2, n=100, seed=1, keys=["a"], by_budget=True)


def test_intervals_on_the_optimal_size():
    torch.set_num_threads(1)
    records = isoflop_sweep(noise=0.005, seed=1)
    points = optimal_params(records, 2, [1e19, 1e21])
    fit = approach2(records)
    assert points["1e+19"] == pytest.approx(fit["n_coefficient"] * 1e19 ** fit["a"])
    exact = optimal_params(isoflop_sweep(), 3, [1e19, 1e21])
    assert [exact["1e+19"], exact["1e+21"]] == pytest.approx([true_n_opt(1e19), true_n_opt(1e21)], rel=1e-3)
    intervals = optimal_params_intervals(records, 3, [1e19, 1e21], n=12, starts=2)
    for c in (1e19, 1e21):
        lo, hi = intervals[f"{c:g}"]
        assert lo <= true_n_opt(c) <= hi and hi / lo < 3
    with pytest.raises(ScalingError, match="approach must be 1, 2 or 3"):
        optimal_params(records, 4, [1e19])
