"""Tables and plots of precision/recall results, shared by the recipes and the `hf-kd` CLI."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(rows: Sequence[dict], label: str = "student") -> str:
    """A fixed-width text table of precision and recall with their confidence intervals.

    Args:
        rows (`list[dict]`): each with ``name`` and the keys of [`hf_kd.metrics.precision_recall`]'s result
            (``precision``, ``precision_ci``, ``recall``, ``recall_ci``, and optionally ``unit``).
        label (`str`): header of the first column.

    Returns:
        `str`: the table; precision and recall are mean log-likelihoods per unit (higher is better).
    """
    unit = rows[0].get("unit", "token") if rows else "token"
    width = max([len(label)] + [len(str(r["name"])) for r in rows])
    header = f"{label:<{width}}  {'precision':>10}  {'95% CI':>19}  {'recall':>10}  {'95% CI':>19}"
    lines = [f"mean log-likelihood per {unit} (higher is better)", header, "-" * len(header)]
    for r in rows:
        p_lo, p_hi = r["precision_ci"]
        r_lo, r_hi = r["recall_ci"]
        lines.append(
            f"{r['name']:<{width}}  {r['precision']:>10.4f}  [{p_lo:>8.4f}, {p_hi:>8.4f}]"
            f"  {r['recall']:>10.4f}  [{r_lo:>8.4f}, {r_hi:>8.4f}]"
        )
    return "\n".join(lines)


def plot_precision_recall(rows: Sequence[dict], path: str, title: str = "Precision-recall trade-off") -> str:
    """Draw each row as a point (recall, precision) with its 95 % CI bars, joined in order; save a PNG.

    Args:
        rows (`list[dict]`): as in [`format_table`].
        path (`str`): where to save the PNG.
        title (`str`): figure title.

    Returns:
        `str`: `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    xs, ys = [r["recall"] for r in rows], [r["precision"] for r in rows]
    ax.plot(xs, ys, color="0.7", zorder=0)
    for r in rows:
        xerr = [[r["recall"] - r["recall_ci"][0]], [r["recall_ci"][1] - r["recall"]]]
        yerr = [[r["precision"] - r["precision_ci"][0]], [r["precision_ci"][1] - r["precision"]]]
        ax.errorbar(r["recall"], r["precision"], xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=str(r["name"]))
    unit = rows[0].get("unit", "token") if rows else "token"
    ax.set_xlabel(f"recall: E_p*[log p''] per {unit}")
    ax.set_ylabel(f"precision: E_p''[log p*] per {unit}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
