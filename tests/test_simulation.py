"""The paper's mixture-of-Gaussians study: its direction at the default settings, scoring under the true p*, the
confidence intervals, the written files and the options."""

import argparse
import csv
import json
import math

import pytest
import torch
from scipy import stats

from hf_kd.simulation import (
    STUDENT_STREAM,
    SimulationConfig,
    add_simulation_arguments,
    config_from_args,
    mean_confidence_interval,
    run_simulation,
    save_results,
    t_quantile,
    true_distribution,
)


@pytest.fixture(scope="module")
def default_results():
    """The full default study (20 seeds, K'=4, n=100, K''=1, selectivities 1 2 5 10 100 inf); ~10 s of CPU."""
    return run_simulation(SimulationConfig(plot=False), progress=False)


def true_log_density(x: torch.Tensor) -> torch.Tensor:
    """log p*(x) written out by hand: 8 equal-weight N(mu, 0.025 I) on the 3x3 grid without its centre."""
    means = torch.tensor([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)], dtype=torch.float64)
    sq = ((x[:, None, :] - means) ** 2).sum(-1)
    log_comp = -sq / (2 * 0.025) - math.log(2 * math.pi * 0.025)
    return torch.logsumexp(log_comp, dim=1) - math.log(8)


def test_default_study_reproduces_the_papers_direction(default_results):
    res = default_results
    betas = res.config.selectivities
    assert betas == (1.0, 2.0, 5.0, 10.0, 100.0, math.inf) and res.precision.shape == (20, 6)
    precision, recall = res.precision.mean(0), res.recall.mean(0)
    tie = 0.02  # nats; students at beta = 100 and inf both sit on (nearly) one teacher component
    assert (precision.diff() > -tie).all(), precision
    assert (recall.diff() < tie).all(), recall
    assert precision[-1] - precision[0] > 2.0 and recall[0] - recall[-1] > 10.0
    j = betas.index(100.0)
    assert precision[j] > res.baseline_precision.mean() and recall[j] < res.baseline_recall.mean()
    # The CIs separate at beta = 100: the direction is not a fluke of the seeds.
    rows = {row["selectivity"]: row for row in res.rows}
    assert (
        rows["100"]["precision"] - rows["100"]["precision_ci"]
        > rows["direct"]["precision"] + rows["direct"]["precision_ci"]
    )
    assert rows["100"]["recall"] + rows["100"]["recall_ci"] < rows["direct"]["recall"] - rows["direct"]["recall_ci"]
    assert rows["100"]["seeds_more_precise_less_recall"] >= 18


def test_precision_is_scored_under_the_true_p_star(default_results):
    res, ex = default_results, default_results.example
    x = torch.randn(200, 2, dtype=torch.float64) * 1.5
    torch.testing.assert_close(true_distribution().log_prob(x).detach(), true_log_density(x))
    # Re-score the first seed's sharpest student by hand: its own samples (same stream) under the hand-written p*.
    student = ex["students"][-1]
    stream = torch.Generator().manual_seed(res.config.seed + STUDENT_STREAM)
    samples = student.sample(res.config.num_eval_samples, generator=stream)
    torch.testing.assert_close(res.precision[0, -1].item(), true_log_density(samples).mean().item())
    teacher_score = ex["teacher"].log_prob(samples).mean().item()
    assert abs(teacher_score - res.precision[0, -1].item()) > 0.1  # scoring under the teacher would differ


def test_t_interval_matches_scipy():
    for df in (1, 4, 19, 200):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-6)
    values = torch.tensor([1.0, 2.5, -0.5, 3.0, 0.25])
    mean, half = mean_confidence_interval(values)
    lo, hi = stats.t.interval(0.95, 4, loc=values.mean().item(), scale=stats.sem(values.numpy()))
    assert mean == pytest.approx((lo + hi) / 2) and half == pytest.approx((hi - lo) / 2)
    assert math.isnan(mean_confidence_interval(torch.tensor([1.0]))[1])


def test_outputs_are_written_and_deterministic(tmp_path):
    config = SimulationConfig(num_seeds=2, selectivities=(1, math.inf), num_eval_samples=500, num_teacher_samples=200)
    first, second = run_simulation(config, progress=False), run_simulation(config, progress=False)
    assert torch.equal(first.precision, second.precision) and torch.equal(first.recall, second.recall)
    paths = save_results(first, str(tmp_path))

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    payload = json.loads(open(paths["json"]).read(), parse_constant=no_constants)
    assert payload["config"]["selectivities"] == [1.0, "inf"]
    assert [r["selectivity"] for r in payload["summary"]] == ["direct", "1", "inf"]
    assert payload["per_seed"]["precision"] == first.precision.tolist()
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[2]["recall"]) == pytest.approx(first.recall[:, 1].mean().item())
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "| distilled, beta = inf |" in first.table()


def test_options_parse_into_a_config():
    parser = add_simulation_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--selectivities", "1", "inf", "--num-seeds", "3", "--teacher-components", "6"])
    config = config_from_args(args)
    assert config.selectivities == (1.0, math.inf) and config.num_seeds == 3 and config.teacher_components == 6
    assert config.student_covariance_type == "diag" and config.num_train_samples == 100


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="selectivities"):
        SimulationConfig(selectivities=(1.0, 0.0))
    with pytest.raises(ValueError, match="num_train_samples=3"):
        SimulationConfig(num_train_samples=3)
    with pytest.raises(ValueError, match="num_seeds"):
        SimulationConfig(num_seeds=0)
