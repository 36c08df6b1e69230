"""EM time of the GMM study's fits: `GMMModel.fit` vs scikit-learn's `GaussianMixture.fit`, same data, same settings.

For each seed of the default study (`hf_kd.simulation.SimulationConfig`): the teacher fit (K'=4, diagonal, on n=100
samples of p*) and the student fits (K''=1, diagonal, on 1,000 samples of the teacher sharpened at each selectivity),
both started from k-means (n_init=1, max_iter=100, tol=1e-3, reg_covar=1e-6). Each `fit` call is timed on its own,
its estimator built before the clock starts (the fit includes input checks, k-means and EM on both sides; building a
GMMModel, a transformers model, costs ~1 ms more), one thread each as the study runs
(torch.set_num_threads(1), threadpoolctl for scikit-learn's BLAS/OpenMP), in alternating order, best of `--rounds`.
Also records the teachers' final mean log-likelihoods (ours minus scikit-learn's, mean and standard error over
seeds): one k-means start each, so per seed either side may win, but on average they must agree.

Timings on a shared machine are noisy: read the ratio, not the absolute times. Writes
benchmarks/results/bench_gmm_em.json (bench_gmm_em_quick.json with --quick).

Usage: python benchmarks/bench_gmm_em.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from report import machine, row  # benchmarks/ is on sys.path (script or run_all.py)
from threadpoolctl import threadpool_limits

from hf_kd.models.gmm import GMMConfig, GMMModel
from hf_kd.simulation import TEACHER_STREAM, SimulationConfig, true_distribution

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _ours(k: int, config: SimulationConfig, seed: int):
    model = GMMModel(GMMConfig(num_components=k, dim=2, covariance_type="diag")).double()
    return lambda x: model.fit(x, max_iter=config.max_iter, tol=config.tol, n_init=config.n_init, seed=seed)


def _sklearn(k: int, config: SimulationConfig, seed: int):
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(
        k, covariance_type="diag", max_iter=config.max_iter, tol=config.tol, n_init=config.n_init, random_state=seed
    )
    return lambda x: gm.fit(x.numpy())


def _timed(fit, x):
    start = time.perf_counter()
    out = fit(x)
    return time.perf_counter() - start, out


def run(quick: bool = False, rounds: int = 3) -> dict:
    """Time every fit of `num_seeds` seeds of the study (20 with `quick`, else 100), best of `rounds` per fit."""
    config = SimulationConfig(num_seeds=20 if quick else 100)
    p_star = true_distribution()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = {key: 0.0 for key in [(w, s) for w in ("teacher", "student") for s in ("ours", "sklearn")]}
    ll_diff, fits = [], {"teacher": 0, "student": 0}
    try:
        with threadpool_limits(1):
            for seed in range(config.seed, config.seed + config.num_seeds):
                train = p_star.sample(config.num_train_samples, generator=torch.Generator().manual_seed(seed))
                jobs = [("teacher", train, config.teacher_components)]
                teacher = _ours(config.teacher_components, config, seed)(train)
                for beta in config.selectivities:
                    gen = torch.Generator().manual_seed(seed + TEACHER_STREAM)
                    distill = teacher.sample(config.num_teacher_samples, selectivity=beta, generator=gen)
                    jobs.append(("student", distill, config.student_components))
                for who, x, k in jobs:
                    best, final_ll = {"ours": math.inf, "sklearn": math.inf}, {}
                    for r in range(rounds):
                        order = ("ours", "sklearn") if r % 2 == 0 else ("sklearn", "ours")
                        for side in order:
                            fit = (_ours if side == "ours" else _sklearn)(k, config, seed)
                            seconds, fitted = _timed(fit, x)
                            best[side] = min(best[side], seconds)
                            if who == "teacher" and r == 0:
                                final_ll[side] = fitted.lower_bound_
                    for side in best:
                        times[(who, side)] += best[side]
                    if who == "teacher":
                        ll_diff.append(final_ll["ours"] - final_ll["sklearn"])
                    fits[who] += 1
    finally:
        torch.set_num_threads(threads)
    diffs = np.array(ll_diff)  # ours - sklearn, per seed
    result = {
        "num_seeds": config.num_seeds,
        "rounds": rounds,
        "fits": fits,
        "machine": {**machine(), "torch_threads": 1, "note": "shared with other jobs while measured"},
        "teacher_final_ll_ours_minus_sklearn_mean": float(diffs.mean()),
        "teacher_final_ll_ours_minus_sklearn_se": float(diffs.std(ddof=1) / math.sqrt(diffs.size)),
    }
    for who in ("teacher", "student"):
        result[f"{who}_ours_ms_per_fit"] = 1e3 * times[(who, "ours")] / fits[who]
        result[f"{who}_sklearn_ms_per_fit"] = 1e3 * times[(who, "sklearn")] / fits[who]
        result[f"{who}_time_ratio"] = times[(who, "ours")] / times[(who, "sklearn")]
    total_ours = times[("teacher", "ours")] + times[("student", "ours")]
    result["all_fits_time_ratio"] = total_ours / (times[("teacher", "sklearn")] + times[("student", "sklearn")])
    return result


def headline(result: dict) -> list[dict]:
    """EM time of the study's fits vs scikit-learn (target: ratio <= 1) and the teachers' likelihood agreement."""
    r = result
    rows = [
        row(
            "gmm_em",
            f"EM time per {who} fit, GMMModel.fit vs sklearn GaussianMixture",
            r[f"{who}_ours_ms_per_fit"],
            r[f"{who}_sklearn_ms_per_fit"],
            r[f"{who}_time_ratio"],
            "ratio <= 1",
            r[f"{who}_time_ratio"] <= 1,
            "ms",
        )
        for who in ("teacher", "student")
    ]
    diff, se = r["teacher_final_ll_ours_minus_sklearn_mean"], r["teacher_final_ll_ours_minus_sklearn_se"]
    rows.append(
        row(
            "gmm_em",
            f"teacher final mean log-likelihood, ours - sklearn (se {se:.2g})",
            diff,
            None,
            None,
            "|mean| <= 3 se",
            abs(diff) <= 3 * se,
            "nats/point",
        )
    )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 seeds instead of 100")
    parser.add_argument("--rounds", type=int, default=3, help="timings per fit; the best is kept")
    args = parser.parse_args()
    r = run(quick=args.quick, rounds=args.rounds)
    print(f"{r['num_seeds']} seeds, fits {r['fits']}, best of {r['rounds']}, one thread (machine shared)")
    for who in ("teacher", "student"):
        print(
            f"{who:8s} ours {r[f'{who}_ours_ms_per_fit']:7.2f} ms  sklearn {r[f'{who}_sklearn_ms_per_fit']:7.2f} ms"
            f"  ratio {r[f'{who}_time_ratio']:.2f}"
        )
    print(f"all fits ratio {r['all_fits_time_ratio']:.2f}")
    print(
        f"teacher final mean log-likelihood, ours - sklearn: {r['teacher_final_ll_ours_minus_sklearn_mean']:+.4f}"
        f" +- {r['teacher_final_ll_ours_minus_sklearn_se']:.4f} (se over seeds)"
    )
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "bench_gmm_em_quick.json" if args.quick else "bench_gmm_em.json")
    with open(path, "w") as f:
        json.dump(r, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
