"""Jobs for analysts and data scientists: the training report, the scores report with its
monitoring section, the monitor on its own, and reason codes for one customer.

Schedule the reports after the jobs they describe (see the README for the whole crontab):
    30 4 2 * *  cd /srv/propensity && .venv/bin/propensity report train >> data/logs/report.log 2>&1
    30 7 3 * *  cd /srv/propensity && .venv/bin/propensity report scores >> data/logs/report.log 2>&1
    45 7 3 * *  cd /srv/propensity && .venv/bin/propensity monitor >> data/logs/monitor.log 2>&1
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np

from propensity import contract, monitor, registry, reports, warehouse
from propensity.config import Settings, load_settings
from propensity.errors import MissingInputError
from propensity.score import read_partition, score_dates
from propensity.store import FeatureStore


def train(settings: Settings, progress: Callable[[str], None] = print, store: FeatureStore | None = None) -> Path:
    """Write ``reports/train.html``: every champion, re-evaluated on its test window."""
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    store = store or FeatureStore(settings)
    champions = registry.list_champions(settings)
    evaluations, seen = [], []
    for row in champions.itertuples(index=False):
        progress(f"re-evaluating {row.name} v{row.version} on its test window")
        champion = registry.load_champion(settings, row.product, row.tier)
        _, tags = registry.run_record(settings, champion.run_id)
        evaluation, ids = reports.evaluate_champion(settings, store, raw.relation, champion, tags)
        evaluations.append(evaluation)
        seen += ids
    facts = {
        "champions": len(evaluations),
        "policy version": settings.policy.version,
        "extracts up to": reports.newest_snapshot(settings),
        "MLflow": registry.tracking_uri(settings),
        "report generated": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S %Z}",
    }
    page = reports.train_report_html(evaluations, facts, settings.training.metrics.ece_bins)
    return reports.write_report(settings, "train", page, seen)


def monitoring(settings: Settings, auc_margin: float = monitor.AUC_MARGIN, until: date | None = None,
               progress: Callable[[str], None] = print, store: FeatureStore | None = None) -> monitor.Monitoring:
    """Realised lift, AUC against test AUC and PSI over the score dates up to ``until``."""
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    store = store or FeatureStore(settings)

    def test_auc_of(run_id: str) -> float:
        return registry.run_record(settings, run_id)[0].get("roc_auc", np.nan)

    def fitted_until_of(run_id: str) -> date | None:
        window = registry.run_record(settings, run_id)[1].get("data_window_valid", "")  # "first..last"
        return date.fromisoformat(window.split("..")[-1]) if ".." in window else None

    def top_features_of(product: str, tier: str) -> list[str]:
        champion = registry.load_champion(settings, product, tier)
        return monitor.top_features(champion.calibrated_model().feature_importance())

    return monitor.monitoring(settings, store, raw.relation, test_auc_of, top_features_of, auc_margin, until, progress,
                              fitted_until_of)


def scores(settings: Settings, day: date | None = None, auc_margin: float = monitor.AUC_MARGIN,
           progress: Callable[[str], None] = print, store: FeatureStore | None = None) -> Path:
    """Write ``reports/scores-<D>.html`` for a score date (default: the newest)."""
    days = score_dates(settings)
    if not days:
        raise MissingInputError(f"no score partition under {settings.scores_dir}: run `propensity score` first")
    day = day or days[-1]
    partition = read_partition(settings, day)
    runs = warehouse.query(settings, "SELECT run_id, customers_excluded FROM score_runs")
    excluded = runs.loc[runs["run_id"].isin(partition["run_id"].unique()), "customers_excluded"]
    found = monitoring(settings, auc_margin, day, progress, store)
    page = reports.scores_report_html(
        partition, day, settings.policy.legal_basis, datetime.now(timezone.utc),
        int(excluded.iloc[-1]) if len(excluded) else None, found,
    )
    return reports.write_report(settings, f"scores-{day.isoformat()}", page, partition["customer_id"].astype(str))


def explain(settings: Settings, customer_id: str, product: str, day: date, top: int | None = reports.TOP_REASONS,
            store: FeatureStore | None = None) -> reports.Explanation:
    """Reason codes of one customer's score (nothing for an excluded customer)."""
    return reports.explain(settings, store or FeatureStore(settings), registry.load_champion, customer_id, product, day, top)


if __name__ == "__main__":
    s = load_settings()
    print(train(s))
    print(scores(s))
