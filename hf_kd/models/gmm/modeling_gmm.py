"""A Gaussian mixture as a transformers model: EM fitting, gradient training, sharpened sampling, log-likelihoods.

The density is ``p(x) = sum_k a_k N(x; mu_k, Sigma_k)`` with ``a = softmax(mixture_logits)`` and
``Sigma_k = L_k L_k^T``, where the Cholesky factor ``L_k`` has a positive diagonal ``exp(log_scale_k)`` (plus a free
strictly-lower part ``scale_tril_k`` for ``covariance_type="full"``), so every covariance stays positive definite under
gradient descent. Sampling with a *selectivity* beta draws from the mixture whose weights are ``a_k**beta``
renormalised (beta = inf: the heaviest component); the component densities are unchanged.

Self-contained on purpose: this file (with its sibling configuration_gmm.py) is copied next to a saved checkpoint and
loaded with ``trust_remote_code=True`` where hf_kd is not installed, so it imports only torch and transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_gmm import GMMConfig, check_selectivity
from .kmeans import kmeans, kmeans_plusplus

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class GMMOutput(ModelOutput):
    """Output of [`GMMModel.forward`].

    Args:
        loss (`torch.Tensor`, a scalar): mean negative log-likelihood of the batch, in nats.
        log_prob (`torch.Tensor` of shape `(n,)`): ``log p(x)`` of every point.
    """

    loss: torch.Tensor | None = None
    log_prob: torch.Tensor | None = None


def sharpen_log_weights(log_weights: torch.Tensor, selectivity: float) -> torch.Tensor:
    """Log of the mixture weights raised to the power beta and renormalised: ``log(a_k**beta / sum_j a_j**beta)``.

    Args:
        log_weights (`torch.Tensor` of shape `(K,)`): log mixture weights.
        selectivity (`float`): beta > 0; ``inf`` keeps the heaviest component(s), ties split evenly.

    Returns:
        `torch.Tensor` of shape `(K,)`: sharpened log-weights (``-inf`` for dropped components).
    """
    selectivity = check_selectivity(selectivity)
    if math.isinf(selectivity):
        is_max = log_weights == log_weights.max()
        return torch.where(is_max, 0.0, float("-inf")).to(log_weights) - is_max.sum().to(log_weights).log()
    # float64: beta * log a stays finite for any finite beta (in float32 a beta above 3.4e38 gave NaN weights).
    return torch.log_softmax(selectivity * log_weights.double(), dim=-1).to(log_weights.dtype)


def gaussian_log_prob(
    x: torch.Tensor, means: torch.Tensor, log_scale: torch.Tensor, scale_tril: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-density of every point under every Gaussian component: ``log N(x_n; mu_k, L_k L_k^T)``.

    With ``diff = x - mu_k`` and ``z = L_k^{-1} diff``: ``-0.5 * (D log 2 pi + |z|^2) - sum_d log L_k[d, d]``.

    Args:
        x (`torch.Tensor` of shape `(N, D)`): points.
        means (`torch.Tensor` of shape `(K, D)`): component means.
        log_scale (`torch.Tensor` of shape `(K, D)` or `(K, 1)`): log of the Cholesky diagonal (one value per
            component when spherical).
        scale_tril (`torch.Tensor` of shape `(K, D, D)`, *optional*): strictly-lower part of the Cholesky factors
            (full covariances); `None` for diagonal or spherical ones.

    Returns:
        `torch.Tensor` of shape `(N, K)`.
    """
    num_points, dim = x.shape
    diff = x[:, None, :] - means[None, :, :]  # (N, K, D)
    log_scale = log_scale.expand(means.shape)
    if scale_tril is None:
        z = diff / log_scale.exp()
    else:
        chol = torch.tril(scale_tril, diagonal=-1) + torch.diag_embed(log_scale.exp())  # (K, D, D)
        z = torch.linalg.solve_triangular(chol, diff.permute(1, 2, 0), upper=False).permute(2, 0, 1)
    return -0.5 * (dim * _LOG_2PI + z.pow(2).sum(-1)) - log_scale.sum(-1)


def _m_step(x: torch.Tensor, resp: torch.Tensor, covariance_type: str, floor: float):
    """Closed-form maximum-likelihood weights, means and covariances given responsibilities `resp` (N, K).

    Returns weights (K,), means (K, D) and covariances: (K, D, D) full, (K, D) diag variances, (K,) spherical.
    """
    counts = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps  # (K,); keeps an empty component finite (as sklearn)
    means = resp.T @ x / counts[:, None]
    if covariance_type == "full":
        diff = x[:, None, :] - means[None]  # (N, K, D)
        cov = torch.einsum("nk,nki,nkj->kij", resp, diff, diff) / counts[:, None, None]
        cov = cov + floor * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    else:
        # E[x^2] - mean^2 per axis, scikit-learn's formula: two small matmuls instead of (N, K, D) differences
        cov = (resp.T @ (x * x)) / counts[:, None] - means.pow(2) + floor
        if covariance_type == "spherical":
            cov = cov.mean(-1)
    return counts / x.shape[0], means, cov


def _cholesky_parameters(cov: torch.Tensor, covariance_type: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(log_scale, scale_tril)`` of covariances: (K, D, D) full, (K, D) diag or (K,) spherical variances."""
    if covariance_type == "full":
        chol, info = torch.linalg.cholesky_ex(cov)
        if info.any():
            raise ValueError("covariances must be symmetric positive definite; raise covariance_floor.")
        return torch.diagonal(chol, dim1=-2, dim2=-1).log(), torch.tril(chol, diagonal=-1)
    if not (cov > 0).all():
        raise ValueError("variances must be positive; raise covariance_floor.")
    return 0.5 * cov.log().reshape(cov.shape[0], -1), None


class GMMModel(PreTrainedModel):
    r"""A mixture of Gaussians that fits by EM or trains by gradient descent, and samples with a selectivity.

    It offers hf_kd's generative-model protocol: [`~GMMModel.sample`] and [`~GMMModel.log_likelihood`].

    Example:
        ```python
        >>> import torch
        >>> from hf_kd.models.gmm import GMMConfig, GMMModel
        >>> x = torch.randn(500, 2)
        >>> model = GMMModel(GMMConfig(num_components=3, dim=2)).fit(x, seed=0)
        >>> model.log_prob(x).shape, model.sample(10, selectivity=5.0).shape
        (torch.Size([500]), torch.Size([10, 2]))
        ```
    """

    config_class = GMMConfig
    base_model_prefix = "gmm"
    main_input_name = "x"

    def __init__(self, config: GMMConfig):
        super().__init__(config)
        k, d = config.num_components, config.dim
        self.mixture_logits = nn.Parameter(torch.zeros(k))
        self.means = nn.Parameter(torch.zeros(k, d))
        self.log_scale = nn.Parameter(torch.zeros(k, 1 if config.covariance_type == "spherical" else d))
        self.scale_tril = nn.Parameter(torch.zeros(k, d, d)) if config.covariance_type == "full" else None
        self.post_init()

    def _init_weights(self, module):
        # Unit covariances, equal weights and standard-normal means (distinct means break the symmetry for gradient
        # training); `fit` and `init_from_data` overwrite all of them. torch.nn.init is guarded by transformers, so
        # parameters loaded from a checkpoint are left alone.
        if isinstance(module, GMMModel):
            nn.init.zeros_(module.mixture_logits)
            nn.init.normal_(module.means)
            nn.init.zeros_(module.log_scale)
            if module.scale_tril is not None:
                nn.init.zeros_(module.scale_tril)

    # ----- the distribution -----

    @property
    def log_weights(self) -> torch.Tensor:
        """`torch.Tensor` of shape `(K,)`: log mixture weights."""
        return torch.log_softmax(self.mixture_logits, dim=-1)

    def cholesky(self) -> torch.Tensor:
        """`torch.Tensor` of shape `(K, D, D)`: lower-triangular factors ``L_k`` of the covariances."""
        chol = torch.diag_embed(self.log_scale.expand_as(self.means).exp())
        return chol if self.scale_tril is None else chol + torch.tril(self.scale_tril, diagonal=-1)

    def covariances(self) -> torch.Tensor:
        """`torch.Tensor` of shape `(K, D, D)`: the covariances ``L_k L_k^T``."""
        chol = self.cholesky()
        return chol @ chol.transpose(-1, -2)

    def _check_points(self, x, name: str = "x") -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[1] != self.config.dim:
            raise ValueError(
                f"{name} must be points of shape (n, dim={self.config.dim}), got shape {tuple(x.shape)}; "
                f"reshape a single point to (1, {self.config.dim})."
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values; drop or fix those points first.")
        return x.to(device=self.means.device, dtype=self.means.dtype)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log a_k + log N(x_n; mu_k, Sigma_k)`` for every point and component, shape `(N, K)`."""
        x = self._check_points(x)
        return self.log_weights + gaussian_log_prob(x, self.means, self.log_scale, self.scale_tril)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density ``log p(x_n)`` of every point.

        Args:
            x (`torch.Tensor` of shape `(N, D)`): points.

        Returns:
            `torch.Tensor` of shape `(N,)`.
        """
        return torch.logsumexp(self.component_log_prob(x), dim=-1)

    def forward(self, x: torch.Tensor, return_dict: bool | None = None, **kwargs) -> GMMOutput | tuple:
        """Mean negative log-likelihood of a batch, so `transformers.Trainer` can train the mixture.

        Args:
            x (`torch.Tensor` of shape `(N, D)`): a batch of points.
            return_dict (`bool`, *optional*): return a tuple ``(loss, log_prob)`` when `False`.
            **kwargs: ignored (e.g. ``num_items_in_batch`` passed by the Trainer).

        Returns:
            [`GMMOutput`] with ``loss`` (scalar) and ``log_prob`` `(N,)`.
        """
        log_prob = self.log_prob(x)
        output = GMMOutput(loss=-log_prob.mean(), log_prob=log_prob)
        use_dict = return_dict if return_dict is not None else self.config.use_return_dict
        return output if use_dict else output.to_tuple()

    # ----- the generative-model protocol -----

    @torch.no_grad()
    def sample(
        self,
        n: int,
        selectivity: float | None = None,
        generator: torch.Generator | None = None,
        return_components: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw `n` points from the mixture with its weights sharpened to ``a_k**beta / sum_j a_j**beta``.

        Args:
            n (`int`): number of points.
            selectivity (`float`, *optional*): beta > 0 (defaults to ``config.selectivity``); 1 samples the model
                itself, ``inf`` only its heaviest component (ties split evenly).
            generator (`torch.Generator`, *optional*): for reproducible draws.
            return_components (`bool`): also return the index of the component each point came from.

        Returns:
            `torch.Tensor` of shape `(n, D)`, and with `return_components` a `torch.LongTensor` of shape `(n,)`.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer number of samples (got {n!r}).")
        beta = self.config.selectivity if selectivity is None else selectivity
        weights = sharpen_log_weights(self.log_weights, beta).exp()
        device = self.means.device
        components = torch.zeros(0, dtype=torch.long)
        if n:
            components = torch.multinomial(weights, n, replacement=True, generator=generator)
        components = components.to(device)
        noise = torch.randn(n, self.config.dim, generator=generator, dtype=self.means.dtype, device=device)
        points = self.means[components] + (self.cholesky()[components] @ noise[:, :, None]).squeeze(-1)
        return (points, components) if return_components else points

    @torch.no_grad()
    def log_likelihood(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample log-likelihood and number of scored units (one per point), hf_kd's protocol for metrics.

        Args:
            samples (`torch.Tensor` of shape `(N, D)`): points.

        Returns:
            `tuple(torch.Tensor, torch.Tensor)`: ``log p(x)`` of shape `(N,)` and ones of shape `(N,)`.
        """
        log_prob = self.log_prob(samples)
        return log_prob, torch.ones_like(log_prob)

    # ----- closed-form fitting -----

    @torch.no_grad()
    def set_parameters(
        self,
        weights: torch.Tensor | None = None,
        means: torch.Tensor | None = None,
        covariances: torch.Tensor | None = None,
    ) -> GMMModel:
        """Set the mixture from its natural parameters (any left `None` is kept).

        Args:
            weights (`torch.Tensor` of shape `(K,)`): positive mixture weights (renormalised).
            means (`torch.Tensor` of shape `(K, D)`).
            covariances (`torch.Tensor`): `(K, D, D)` positive definite (full), `(K, D)` variances (diag) or `(K,)`
                variances (spherical).

        Returns:
            The model itself.
        """
        k, d, kind = self.config.num_components, self.config.dim, self.config.covariance_type
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64)
            if weights.shape != (k,) or not (weights > 0).all():
                raise ValueError(f"weights must be {k} positive numbers, got {weights}.")
            self.mixture_logits.copy_((weights / weights.sum()).log())
        if means is not None:
            means = torch.as_tensor(means)
            if means.shape != (k, d) or not torch.isfinite(means).all():
                raise ValueError(f"means must be finite with shape ({k}, {d}), got shape {tuple(means.shape)}.")
            self.means.copy_(means)
        if covariances is not None:
            cov = torch.as_tensor(covariances, dtype=torch.float64)
            expected = {"full": (k, d, d), "diag": (k, d), "spherical": (k,)}[kind]
            if cov.shape != expected:
                raise ValueError(f"{kind} covariances must have shape {expected}, got {tuple(cov.shape)}.")
            log_scale, tril = _cholesky_parameters(cov, kind)
            self.log_scale.copy_(log_scale)
            if tril is not None:
                self.scale_tril.copy_(tril)
        return self

    def _check_fit_data(self, x) -> torch.Tensor:
        x = self._check_points(x).double()
        if x.shape[0] < self.config.num_components:
            raise ValueError(
                f"cannot fit {self.config.num_components} components on {x.shape[0]} points; use more points or a "
                "config with fewer num_components."
            )
        return x

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, method: str = "kmeans", seed: int | torch.Generator = 0) -> GMMModel:
        """Initialise from a hard clustering of the data and one M-step on it (weights, means, covariances).

        Args:
            x (`torch.Tensor` of shape `(N, D)`): points, ``N >= K``.
            method (`str`): how the K clusters are found:

                - `"kmeans"` (scikit-learn's `GaussianMixture` default): Lloyd's k-means from greedy k-means++
                  seeds, run to convergence (see [`kmeans`]).
                - `"kmeans++"`: the k-means++ seeds only; every point joins its nearest seed.
                - `"random"`: K distinct points drawn uniformly; every point joins its nearest one.
            seed (`int` or `torch.Generator`): seed of the draw (or a CPU generator to draw from); the result is
                deterministic given it.

        Returns:
            The model itself.
        """
        x = self._check_fit_data(x)
        k = self.config.num_components
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        if method == "kmeans":
            labels = kmeans(x, k, gen)[1]
        elif method in ("kmeans++", "random"):
            if method == "random":
                idx = torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)
            else:
                idx = kmeans_plusplus(x, k, gen)
            labels = torch.cdist(x, x[idx]).argmin(-1)
        else:
            raise ValueError(f"method must be 'kmeans', 'kmeans++' or 'random' (got {method!r}).")
        resp = torch.nn.functional.one_hot(labels, k).to(x.dtype)
        return self.set_parameters(*_m_step(x, resp, self.config.covariance_type, self.config.covariance_floor))

    @torch.no_grad()
    def fit(
        self,
        x: torch.Tensor,
        max_iter: int = 100,
        tol: float = 1e-3,
        init: str = "kmeans",
        n_init: int = 1,
        seed: int = 0,
    ) -> GMMModel:
        """Maximum-likelihood fit by expectation-maximisation (closed form, float64, vectorised).

        Run as scikit-learn's `GaussianMixture` runs it (same defaults): each iteration computes responsibilities
        (E-step), then the weights, means and covariances they imply, with ``config.covariance_floor`` added to the
        covariance diagonal (M-step); it stops when the mean log-likelihood of the E-step changes by less than
        `tol`. With ``n_init > 1`` EM restarts from `n_init` initialisations (drawn in turn from one generator seeded
        with `seed`) and keeps the one with the highest final mean log-likelihood. Sets ``n_iter_``, ``converged_``
        and ``lower_bound_`` (the last mean log-likelihood) of the kept run.

        Args:
            x (`torch.Tensor` of shape `(N, D)`): training points, ``N >= K``.
            max_iter (`int`): maximum number of EM iterations per initialisation.
            tol (`float`): convergence threshold on the mean log-likelihood, in nats.
            init (`str`): `"kmeans"`, `"kmeans++"`, `"random"` (see [`~GMMModel.init_from_data`]) or `"current"`
                to start from the present parameters.
            n_init (`int`): number of initialisations; 1 with ``init="current"``.
            seed (`int`): seed of the initialisations.

        Returns:
            The fitted model itself.
        """
        x = self._check_fit_data(x)
        if max_iter < 1 or not tol >= 0 or n_init < 1:
            raise ValueError(
                f"fit needs max_iter >= 1, tol >= 0 and n_init >= 1 (got max_iter={max_iter}, tol={tol}, "
                f"n_init={n_init})."
            )
        if init == "current" and n_init != 1:
            raise ValueError("init='current' starts from the present parameters once; use n_init=1 with it.")
        gen = torch.Generator().manual_seed(seed)
        best = None
        for _ in range(n_init):
            if init != "current":
                self.init_from_data(x, method=init, seed=gen)
            run = self._em(x, max_iter, tol)
            if best is None or run[0] > best[0]:
                best = run
        self.lower_bound_, self.n_iter_, self.converged_, params = best
        return self.set_parameters(*params)

    def _em(self, x: torch.Tensor, max_iter: int, tol: float) -> tuple[float, int, bool, tuple]:
        """EM from the present parameters: ``(last mean log-likelihood, iterations, converged, (w, mu, cov))``."""
        kind, floor = self.config.covariance_type, self.config.covariance_floor
        log_w, means = self.log_weights.double(), self.means.double()
        log_scale = self.log_scale.double()
        tril = None if self.scale_tril is None else self.scale_tril.double()
        previous = -math.inf
        for n_iter in range(1, max_iter + 1):
            joint = log_w + gaussian_log_prob(x, means, log_scale, tril)  # (N, K)
            log_norm = torch.logsumexp(joint, dim=-1, keepdim=True)
            lower_bound = float(log_norm.mean())
            weights, means, cov = _m_step(x, (joint - log_norm).exp(), kind, floor)
            log_w, (log_scale, tril) = weights.log(), _cholesky_parameters(cov, kind)
            if abs(lower_bound - previous) < tol:
                return lower_bound, n_iter, True, (weights, means, cov)
            previous = lower_bound
        return lower_bound, max_iter, False, (weights, means, cov)
