"""k-means as scikit-learn's `KMeans(n_init=1)` runs it: greedy k-means++ seeding, then Lloyd iterations.

`GMMModel.fit` starts EM from these clusters, as scikit-learn's `GaussianMixture` does by default
(``init_params="kmeans"``). Self-contained on purpose (copied next to a checkpoint with modeling_gmm.py): torch only.
"""

from __future__ import annotations

import math

import torch


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
        with_candidate = torch.minimum(closest, torch.cdist(x[candidates], x).pow(2))  # (T, N)
        best = int(with_candidate.sum(-1).argmin())
        indices.append(int(candidates[best]))
        closest = with_candidate[best]
    return torch.tensor(indices, device=x.device)


def kmeans(
    x: torch.Tensor, k: int, generator: torch.Generator, max_iter: int = 300, tol: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from k-means++ seeds, with scikit-learn's stopping rules and empty-cluster relocation.

    Each iteration assigns every point to its nearest centre and moves each centre to the mean of its points. It
    stops when no label changes, or when the squared centre shift summed over centres is at most
    ``tol * mean_d Var(x[:, d])``. A centre left without points moves to the point farthest from its own centre.

    Args:
        x (`torch.Tensor` of shape `(N, D)`): points, ``N >= k``.
        k (`int`): number of clusters.
        generator (`torch.Generator`): seeds the k-means++ draw.
        max_iter (`int`), tol (`float`): as scikit-learn's `KMeans`.

    Returns:
        `tuple(torch.Tensor, torch.LongTensor)`: centres `(k, D)` and the label of every point `(N,)`.
    """
    centres = x[kmeans_plusplus(x, k, generator)]
    threshold = tol * float(x.var(0, unbiased=False).mean())
    labels = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        sq_dist = torch.cdist(x, centres).pow(2)  # (N, k)
        new_labels = sq_dist.argmin(-1)
        one_hot = torch.nn.functional.one_hot(new_labels, k).to(x.dtype)  # (N, k)
        counts, sums = one_hot.sum(0), one_hot.T @ x
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            # scikit-learn's relocation: the points farthest from their centres become the empty centres.
            far = sq_dist.gather(1, new_labels[:, None]).squeeze(1).topk(empty.numel()).indices
            sums.index_add_(0, new_labels[far], -x[far])
            counts.index_add_(0, new_labels[far], -torch.ones_like(far, dtype=x.dtype))
            sums[empty], counts[empty] = x[far], 1.0
        new_centres = sums / counts[:, None]
        shift = (new_centres - centres).pow(2).sum()
        centres = new_centres
        if torch.equal(new_labels, labels):
            return centres, labels
        labels = new_labels
        if shift <= threshold:
            break
    return centres, torch.cdist(x, centres).argmin(-1)
