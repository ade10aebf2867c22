"""Scheduled job: labelled customer-snapshots → features per tier → one calibrated model
per product × tier, logged and registered in MLflow, promoted only when it beats the
champion on the same test window.

Schedule it after `build_features` (e.g. monthly, on the 2nd, 02:00):
    0 2 2 * *  cd /srv/propensity && .venv/bin/propensity train >> data/logs/train.log 2>&1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from propensity import contract, registry, train
from propensity.config import Settings, load_settings
from propensity.store import FeatureStore


def run(settings: Settings, products: Sequence[str] | None = None, tiers: Sequence[str] | None = None,
        progress: Callable[[str], None] = print, store: FeatureStore | None = None) -> train.TrainingResult:
    train.training_selection(settings.catalogue, products, tiers)  # an unknown product or tier fails before anything is written
    progress(f"validating extracts in {settings.raw_dir}")
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    store = store or FeatureStore(settings)
    store.apply()
    plan = train.plan_training(settings, store, raw.relation, products, tiers, progress)
    return registry.log_training(settings, plan, train.train_models(settings, store, plan, progress), progress)


if __name__ == "__main__":
    run(load_settings())
