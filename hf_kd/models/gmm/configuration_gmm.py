"""Configuration of the Gaussian-mixture toy model.

Self-contained on purpose: this file is copied next to a saved checkpoint and loaded with ``trust_remote_code=True``
where hf_kd is not installed, so it imports nothing from hf_kd.
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

COVARIANCE_TYPES = ("full", "diag", "spherical")


class GMMConfig(PreTrainedConfig):
    r"""Configuration of a [`GMMModel`]: a mixture of `num_components` Gaussians in `dim` dimensions.

    Args:
        num_components (`int`, defaults to 1): number of mixture components K.
        dim (`int`, defaults to 2): dimension D of the points.
        covariance_type (`str`, defaults to `"full"`): `"full"` (one Cholesky factor per component), `"diag"` (one
            standard deviation per component and axis) or `"spherical"` (one standard deviation per component).
        selectivity (`float`, defaults to 1.0): default beta of [`GMMModel.sample`]; the mixture weights are raised to
            this power and renormalised (1 = the model itself, ``inf`` = its heaviest component).
        covariance_floor (`float`, defaults to 1e-6): added to the covariance diagonal in every EM M-step
            (scikit-learn's ``reg_covar``), so a component collapsing on one point stays positive definite.

    Example:
        ```python
        >>> from hf_kd.models.gmm import GMMConfig, GMMModel
        >>> model = GMMModel(GMMConfig(num_components=4, dim=2, covariance_type="diag"))
        ```
    """

    model_type = "hf_kd_gmm"

    def __init__(
        self,
        num_components: int = 1,
        dim: int = 2,
        covariance_type: str = "full",
        selectivity: float = 1.0,
        covariance_floor: float = 1e-6,
        **kwargs,
    ):
        if not isinstance(num_components, int) or num_components < 1:
            raise ValueError(f"num_components must be a positive integer (got {num_components!r}).")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer (got {dim!r}).")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES} (got {covariance_type!r}).")
        selectivity = check_selectivity(selectivity)
        if not covariance_floor >= 0:
            raise ValueError(f"covariance_floor must be >= 0 (got {covariance_floor!r}).")
        self.num_components = num_components
        self.dim = dim
        self.covariance_type = covariance_type
        self.selectivity = selectivity
        self.covariance_floor = float(covariance_floor)
        super().__init__(**kwargs)


def check_selectivity(selectivity: float) -> float:
    """`selectivity` as a float, refused unless it is > 0 (``inf`` keeps the heaviest component).

    The GMM's own check: `hf_kd.models` import nothing else of hf_kd (the general one is
    `hf_kd.sharpening.check_selectivity`).
    """
    selectivity = float(selectivity)
    if math.isnan(selectivity) or selectivity <= 0:
        raise ValueError(
            f"selectivity must be > 0 (got {selectivity}); 1.0 keeps the mixture weights, larger values sharpen "
            "them and float('inf') keeps the heaviest component."
        )
    return selectivity
