"""k-means as scikit-learn's `KMeans(n_init=1)` runs it: greedy k-means++ seeding, then Lloyd iterations.

`GMMModel.fit` starts EM from these clusters, as scikit-learn's `GaussianMixture` does by default
(``init_params="kmeans"``). Self-contained on purpose (copied next to a checkpoint with modeling_gmm.py): torch only.
"""

from __future__ import annotations

import math

import torch


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances `(A, B)` between rows, from direct differences (no cancellation, unlike cdist)."""
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)


def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of `k` seed points chosen by greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's variant).

    The first seed is uniform; each next one is the best, by the resulting sum of squared distances to the nearest
    seed, of ``2 + floor(log k)`` candidates drawn with probability proportional to that squared distance.

    Args:
        x (`torch.Tensor` of shape `(N, D)`): points.
        k (`int`): number of seeds, ``k <= N``.
        generator (`torch.Generator`): source of randomness (on the CPU).

    Returns:
        `torch.LongTensor` of shape `(k,)`.
    """
    num_trials = 2 + int(math.log(k))
    first = int(torch.randint(x.shape[0], (1,), generator=generator))
    indices = [first]
    closest = (x - x[first]).pow(2).sum(-1)  # (N,) squared distance to the nearest seed so far
    for _ in range(1, k):
        cumulative = closest.cumsum(0)
        draws = torch.rand(num_trials, generator=generator, dtype=x.dtype).to(x.device) * cumulative[-1]
        candidates = torch.searchsorted(cumulative, draws).clamp(max=x.shape[0] - 1)  # (T,)
        with_candidate = torch.minimum(closest, _sq_dist(x[candidates], x))  # (T, N)
        best = int(with_candidate.sum(-1).argmin())
        indices.append(int(candidates[best]))
        closest = with_candidate[best]
    return torch.tensor(indices, device=x.device)


def lloyd(
    x: torch.Tensor, centres: torch.Tensor, max_iter: int = 300, tol: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from given centres, with scikit-learn's stopping rules and empty-cluster relocation.

    Each iteration assigns every point to its nearest centre and moves each centre to the mean of its points. It
    stops when no label changes, or when the squared centre shift summed over centres is at most
    ``tol * mean_d Var(x[:, d])``. A centre left without points takes the point farthest from its own centre.

    Args:
        x (`torch.Tensor` of shape `(N, D)`): points.
        centres (`torch.Tensor` of shape `(k, D)`): initial centres.
        max_iter (`int`), tol (`float`): as scikit-learn's `KMeans`.

    Returns:
        `tuple(torch.Tensor, torch.LongTensor)`: centres `(k, D)` and the label of every point `(N,)`.
    """
    k = centres.shape[0]
    threshold = tol * float(x.var(0, unbiased=False).mean())
    labels = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        sq_dist = _sq_dist(x, centres)  # (N, k)
        new_labels = sq_dist.argmin(-1)
        counts = torch.bincount(new_labels, minlength=k).to(x.dtype)  # (k,)
        sums = torch.zeros_like(centres).index_add_(0, new_labels, x)  # (k, D)
        if (counts == 0).any():
            # scikit-learn's relocation: the points farthest from their centres become the empty centres.
            empty = (counts == 0).nonzero().flatten()
            far = sq_dist.gather(1, new_labels[:, None]).squeeze(1).topk(empty.numel()).indices
            sums.index_add_(0, new_labels[far], -x[far])
            counts.index_add_(0, new_labels[far], -torch.ones_like(far, dtype=x.dtype))
            sums[empty], counts[empty] = x[far], 1.0
        new_centres = sums / counts[:, None]
        if torch.equal(new_labels, labels):
            return new_centres, labels
        shift = float((new_centres - centres).pow(2).sum())
        centres, labels = new_centres, new_labels
        if shift <= threshold:
            break
    return centres, _sq_dist(x, centres).argmin(-1)


def kmeans(
    x: torch.Tensor, k: int, generator: torch.Generator, max_iter: int = 300, tol: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means as scikit-learn's ``KMeans(k, n_init=1)``: [`lloyd`] from [`kmeans_plusplus`] seeds.

    Args:
        x (`torch.Tensor` of shape `(N, D)`): points, ``N >= k``.
        k (`int`): number of clusters.
        generator (`torch.Generator`): seeds the k-means++ draw.
        max_iter (`int`), tol (`float`): see [`lloyd`].

    Returns:
        `tuple(torch.Tensor, torch.LongTensor)`: centres `(k, D)` and the label of every point `(N,)`.
    """
    if k == 1:  # one cluster holds every point; nothing to draw
        return x.mean(0, keepdim=True), torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    return lloyd(x, x[kmeans_plusplus(x, k, generator)], max_iter=max_iter, tol=tol)
