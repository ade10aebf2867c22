"""Metrics of a probability model on a labelled window, and the figures of its report.

Every metric takes the labels ``y`` (0/1) and the predicted probabilities ``p`` of one
window, and none depends on the order of the rows: rows with equal probabilities are never
told apart (a tie is never split between bins, and the rows tied at the top decile's cut
count by their mean outcome). A calibrated model gives many ties (isotonic calibration is
a step function), and a metric that broke them by row order would read the order the rows
came in. ``report_html`` renders a self-contained HTML page (matplotlib
figures embedded as base64 PNG; no pyplot global state) with aggregates only: it holds no
customer row.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def _arrays(y: Sequence[float], p: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.shape[0]} vs {p.shape[0]}")
    return y, p


def roc_auc(y: Sequence[float], p: Sequence[float]) -> float:
    """Area under the ROC curve; NaN when the window holds a single class."""
    y, p = _arrays(y, p)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, p))


def pr_auc(y: Sequence[float], p: Sequence[float]) -> float:
    """Average precision (area under the precision-recall curve); NaN without positives."""
    y, p = _arrays(y, p)
    if y.size == 0 or y.max() == 0:
        return float("nan")
    return float(average_precision_score(y, p))


def brier(y: Sequence[float], p: Sequence[float]) -> float:
    """Mean squared difference between probability and outcome."""
    y, p = _arrays(y, p)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def lift_top_fraction(y: Sequence[float], p: Sequence[float], fraction: float = 0.1) -> float:
    """Positive rate among the ``ceil(fraction * n)`` highest-scored rows over the overall
    positive rate (1.0 = no better than random); NaN without positives. Rows tied with
    the last row taken count by the tie's mean outcome (the expected rate of a random
    choice among them)."""
    y, p = _arrays(y, p)
    if y.size == 0 or y.sum() == 0:
        return float("nan")
    top = max(1, math.ceil(fraction * y.size))
    cut = np.sort(p)[::-1][top - 1]
    above = p > cut
    tied = p == cut
    positives = y[above].sum() + (top - above.sum()) * y[tied].mean()
    return float(positives / top / y.mean())


def equal_mass_bins(p: np.ndarray, bins: int) -> np.ndarray:
    """Bin number (0 = lowest probabilities) of each row: the deciles (for 10 bins) of
    :func:`deciles_by_rank` counted from the bottom, so bins hold equal numbers of rows up
    to one, and a tie is never split (it goes whole to the bin of its highest rank)."""
    order = np.argsort(-p, kind="stable")
    out = np.empty(p.size, dtype=np.int64)
    out[order] = bins - deciles_by_rank(p[order], bins)
    return out


def calibration_table(y: Sequence[float], p: Sequence[float], bins: int) -> pd.DataFrame:
    """Per equal-mass bin of the prediction: rows, mean probability, observed positive rate."""
    y, p = _arrays(y, p)
    frame = pd.DataFrame({"bin": equal_mass_bins(p, bins), "p": p, "y": y})
    table = frame.groupby("bin").agg(rows=("y", "size"), mean_probability=("p", "mean"), positive_rate=("y", "mean"))
    return table.reset_index()


def expected_calibration_error(y: Sequence[float], p: Sequence[float], bins: int) -> float:
    """ECE over equal-mass bins: sum over bins of (rows in bin / rows) * |mean p - positive rate|.

    Equal-mass bins (deciles of the prediction for 10 bins) rather than equal-width ones:
    propensities are mostly a few percent, and equal-width bins would put nearly every
    row in the first bin and hide miscalibration where the campaign lists are cut.
    """
    y, p = _arrays(y, p)
    if y.size == 0:
        return float("nan")
    table = calibration_table(y, p, bins)
    weights = table["rows"].to_numpy() / y.size
    return float(np.sum(weights * np.abs(table["mean_probability"].to_numpy() - table["positive_rate"].to_numpy())))


def deciles_by_rank(probability_desc: np.ndarray, bins: int = 10) -> np.ndarray:
    """Decile (1 = top) of each of a product's scores sorted by decreasing probability:
    ``ceil(r * bins / n)`` with ``r`` the rank of the first row of the row's tie. Equal
    probabilities share a decile; a tie straddling a cut goes whole to the upper decile,
    so the top decile is never empty. The rule of the score table's ``decile``."""
    p = np.asarray(probability_desc, dtype=np.float64)
    if p.size == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    first = np.repeat(starts + 1, np.diff(np.r_[starts, p.size]))
    return np.ceil(first * bins / p.size).astype(np.int64)


def lift_by_decile(y: Sequence[float], p: Sequence[float], bins: int = 10) -> pd.DataFrame:
    """Per decile of the score (:func:`deciles_by_rank`, 1 = highest): rows, positive rate
    and lift over the overall rate."""
    y, p = _arrays(y, p)
    order = np.argsort(-p, kind="stable")
    decile = np.empty(p.size, dtype=np.int64)
    decile[order] = deciles_by_rank(p[order], bins)
    frame = pd.DataFrame({"decile": decile, "y": y, "p": p})
    table = frame.groupby("decile").agg(rows=("y", "size"), positive_rate=("y", "mean"), mean_probability=("p", "mean"))
    overall = y.mean() if y.size else float("nan")
    table["lift"] = table["positive_rate"] / overall if overall else float("nan")
    return table.reset_index()


def classification_metrics(y: Sequence[float], p: Sequence[float], ece_bins: int) -> dict[str, float]:
    """ROC AUC, PR AUC, top-decile lift, Brier score, ECE and the window's positive rate."""
    y_arr, p_arr = _arrays(y, p)
    return {
        "roc_auc": roc_auc(y_arr, p_arr),
        "pr_auc": pr_auc(y_arr, p_arr),
        "lift_top_decile": lift_top_fraction(y_arr, p_arr, 0.1),
        "brier": brier(y_arr, p_arr),
        "ece": expected_calibration_error(y_arr, p_arr, ece_bins),
        "positive_rate": float(y_arr.mean()) if y_arr.size else float("nan"),
        "mean_probability": float(p_arr.mean()) if p_arr.size else float("nan"),
    }


# ------------------------------------------------------------------------------- report
def png_base64(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def new_figure(width: float = 5.0, height: float = 3.6):
    from matplotlib.figure import Figure  # no pyplot: no global figure registry, no GUI backend

    figure = Figure(figsize=(width, height))
    return figure, figure.add_subplot(1, 1, 1)


def roc_figure(y: np.ndarray, curves: Mapping[str, np.ndarray]) -> str:
    figure, ax = new_figure()
    for label, p in curves.items():
        if np.unique(y).size < 2:
            break
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc(y, p):.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, test window")
    ax.legend(loc="lower right", fontsize=8)
    return png_base64(figure)


def calibration_figure(y: np.ndarray, p: np.ndarray, bins: int) -> str:
    table = calibration_table(y, p, bins)
    figure, ax = new_figure()
    top = float(max(table["mean_probability"].max(), table["positive_rate"].max(), 1e-6)) * 1.05
    ax.plot([0, top], [0, top], linestyle=":", color="grey")
    ax.plot(table["mean_probability"], table["positive_rate"], marker="o")
    ax.set_xlabel("mean predicted probability (equal-mass bins)")
    ax.set_ylabel("observed positive rate")
    ax.set_title("Calibration, test window")
    return png_base64(figure)


def lift_figure(y: np.ndarray, p: np.ndarray) -> str:
    table = lift_by_decile(y, p)
    figure, ax = new_figure()
    ax.bar(table["decile"], table["lift"])
    ax.axhline(1.0, linestyle=":", color="grey")
    ax.set_xticks(table["decile"])
    ax.set_xlabel("decile of the score (1 = highest)")
    ax.set_ylabel("lift over the base rate")
    ax.set_title("Lift by decile, test window")
    return png_base64(figure)


def importance_figure(importance: pd.Series, top: int = 20) -> str:
    shown = importance.sort_values(ascending=False).head(top)[::-1]
    figure, ax = new_figure(5.5, max(2.5, 0.22 * len(shown) + 1))
    ax.barh(shown.index.astype(str), shown.to_numpy())
    ax.set_xlabel("total gain")
    ax.set_title(f"Feature importance (top {len(shown)})")
    ax.tick_params(axis="y", labelsize=7)
    return png_base64(figure)


def report_html(
    title: str,
    facts: Mapping[str, object],
    metrics: pd.DataFrame,
    y: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    calibrated: str,
    importance: pd.Series,
    ece_bins: int,
) -> str:
    """A self-contained HTML report of one model on its test window.

    ``facts`` are shown as a table (model, versions, windows, row counts); ``metrics`` is a
    table with one row per model compared; ``curves`` maps a label to test probabilities
    (``calibrated`` names the one whose calibration and lift are drawn); ``importance``
    is the gain per feature.
    """
    y_arr = np.asarray(y, dtype=np.float64)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in curves.items()}
    images = [
        ("ROC", roc_figure(y_arr, arrays)),
        ("Calibration", calibration_figure(y_arr, arrays[calibrated], ece_bins)),
        ("Lift by decile", lift_figure(y_arr, arrays[calibrated])),
        ("Feature importance", importance_figure(importance)),
    ]
    body = "\n".join(
        [
            facts_table(facts),
            "<h2>Test window metrics</h2>",
            metrics.to_html(float_format=lambda v: f"{v:.4f}", border=0, na_rep="-", index=False),
            "<h2>Figures</h2>",
            "".join(figure_html(name, data) for name, data in images),
        ]
    )
    return html_page(title, body)


PAGE_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
.warning { color: #a00; font-weight: bold; }
.note { color: #555; }
"""


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (one style sheet for every report of the project)."""
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f"<style>{PAGE_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def facts_table(facts: Mapping[str, object]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    return f"<table>{rows}</table>"


def figure_html(name: str, png_base64: str) -> str:
    return (
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{png_base64}"/>'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
    )
