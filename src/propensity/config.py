"""One typed configuration, loaded once from ``conf/`` and passed down.

``load_settings()`` reads ``conf/pipeline.yaml`` and the files it points to (the data
policy, the product catalogue, the training settings) into pydantic models. Nothing here
runs at import time and nothing else in the package reads configuration files.
"""

from __future__ import annotations

import os
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from propensity.errors import ConfigError

TIERS = ("personalised", "basic", "excluded")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- the data policy
class CategoryRule(_Model):
    tiers: tuple[str, ...]
    description: str = ""


class TierCondition(_Model):
    consent: str | None = None
    reservation: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "TierCondition":
        if (self.consent is None) == (self.reservation is None):
            raise ValueError("a tier condition names exactly one of `consent` or `reservation`")
        return self


class TierRule(_Model):
    tier: str
    when: TierCondition


class GroupCompany(_Model):
    companies: tuple[str, ...]
    requires_consent: str


class ChannelRule(_Model):
    reservable_as: str | None = None
    needs_consent_for_unheld_product: str | None = None


class CustomerMatching(_Model):
    blocked_by_reservation: str
    fields: tuple[str, ...]
    hash: Literal["sha256"] = "sha256"
    default_country_code: str = "+47"


class Retention(_Model):
    marketing_data_years: int = Field(gt=0)
    contact_log_years: int = Field(gt=0)


class Policy(_Model):
    """The marketing data policy (POLICY.md) as a validated document."""

    version: str
    tiers: tuple[str, ...]
    tier_rules: tuple[TierRule, ...]
    default_tier: str
    legal_basis: dict[str, str]
    categories: dict[str, CategoryRule]
    group_company: GroupCompany
    consents: tuple[str, ...]
    reservations: tuple[str, ...]
    tie_rule: Literal["protective"] = "protective"
    channels: dict[str, ChannelRule]
    all_channels_reservation: str
    customer_matching: CustomerMatching
    retention: Retention

    @model_validator(mode="after")
    def _consistent(self) -> "Policy":
        if set(self.tiers) != set(TIERS):
            raise ValueError(f"tiers must be exactly {TIERS}, got {self.tiers}")
        problems: list[str] = []
        for rule in self.tier_rules:
            if rule.tier not in self.tiers:
                problems.append(f"tier_rules: unknown tier {rule.tier!r}")
            if rule.when.consent and rule.when.consent not in self.consents:
                problems.append(f"tier_rules: unknown consent {rule.when.consent!r}")
            if rule.when.reservation and rule.when.reservation not in self.reservations:
                problems.append(f"tier_rules: unknown reservation {rule.when.reservation!r}")
        if self.default_tier not in self.tiers:
            problems.append(f"default_tier: unknown tier {self.default_tier!r}")
        for name, cat in self.categories.items():
            bad = set(cat.tiers) - {"personalised", "basic"}
            if bad:
                problems.append(f"categories.{name}: tiers {sorted(bad)} may not use data")
        for tier in ("personalised", "basic"):
            if tier not in self.legal_basis:
                problems.append(f"legal_basis: missing tier {tier!r}")
        if self.group_company.requires_consent not in self.consents:
            problems.append("group_company.requires_consent: not a declared consent")
        for name, ch in self.channels.items():
            if ch.reservable_as and ch.reservable_as not in self.reservations:
                problems.append(f"channels.{name}: unknown reservation {ch.reservable_as!r}")
            if ch.needs_consent_for_unheld_product and ch.needs_consent_for_unheld_product not in self.consents:
                problems.append(f"channels.{name}: unknown consent {ch.needs_consent_for_unheld_product!r}")
        if self.all_channels_reservation not in self.reservations:
            problems.append("all_channels_reservation: not a declared reservation")
        if self.customer_matching.blocked_by_reservation not in self.reservations:
            problems.append("customer_matching.blocked_by_reservation: not a declared reservation")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def categories_for(self, tier: str) -> tuple[str, ...]:
        """Data categories the tier may use, in policy order (none for `excluded`)."""
        return tuple(name for name, rule in self.categories.items() if tier in rule.tiers)

    @property
    def personalised_only(self) -> tuple[str, ...]:
        """Categories the personalised tier may use and the basic tier may not."""
        basic = set(self.categories_for("basic"))
        return tuple(c for c in self.categories_for("personalised") if c not in basic)


# ---------------------------------------------------------------- the product catalogue
class Eligibility(_Model):
    min_age: int | None = None
    max_age: int | None = None
    brands: tuple[str, ...] | None = None


class LabelWindow(_Model):
    gap_months: int = Field(ge=0)
    horizon_months: int = Field(gt=0)


class Product(_Model):
    name: str
    company: Literal["bank", "insurance", "asset_management"]
    eligibility: Eligibility = Eligibility()
    label: LabelWindow


class Catalogue(_Model):
    products: dict[str, Product]
    canary_product: str | None = None

    @model_validator(mode="after")
    def _canary_known(self) -> "Catalogue":
        if self.canary_product and self.canary_product not in self.products:
            raise ValueError(f"canary_product {self.canary_product!r} is not in the catalogue")
        return self

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.products)

    @property
    def max_label_months(self) -> int:
        return max(p.label.gap_months + p.label.horizon_months for p in self.products.values())


# ---------------------------------------------------------------- training settings
class ValidationWindows(_Model):
    test_months: int = Field(gt=0)
    valid_months: int = Field(gt=0)
    min_train_months: int = Field(gt=0)


class LightGBMParams(_Model):
    n_estimators: int = 400
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 40
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    early_stopping_rounds: int = 40
    class_weight: Literal["balanced"] | None = None


class LogisticParams(_Model):
    C: float = 1.0
    max_iter: int = 500


class Calibration(_Model):
    methods: tuple[Literal["isotonic", "sigmoid"], ...] = ("isotonic", "sigmoid")


class Metrics(_Model):
    ece_bins: int = 10


class Promotion(_Model):
    metric: Literal["roc_auc", "pr_auc"] = "roc_auc"
    margin: float = Field(ge=0)


class Training(_Model):
    validation: ValidationWindows
    lightgbm: LightGBMParams = LightGBMParams()
    logistic: LogisticParams = LogisticParams()
    calibration: Calibration = Calibration()
    metrics: Metrics = Metrics()
    promotion: Promotion


# ---------------------------------------------------------------- the pipeline
class SynthSettings(_Model):
    customers: int = Field(gt=0)
    months: int = Field(gt=1)
    start: date
    transactions_per_month: float = Field(gt=0)

    @field_validator("start")
    @classmethod
    def _first_of_month(cls, v: date) -> date:
        if v.day != 1:
            raise ValueError("synth.start must be the first day of a month")
        return v


class Settings(BaseModel):
    """Everything a pipeline step needs to know, resolved to absolute paths."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    root: Path
    data_dir: Path
    raw_dir: Path
    feature_repo: Path
    policy_file: Path
    products_file: Path
    training_file: Path
    n_jobs: int = Field(default=2, gt=0)
    seed: int = 42
    synth: SynthSettings

    @cached_property
    def policy(self) -> Policy:
        return Policy.model_validate(_read_yaml(self.policy_file))

    @cached_property
    def catalogue(self) -> Catalogue:
        return Catalogue.model_validate(_read_yaml(self.products_file))

    @cached_property
    def training(self) -> Training:
        return Training.model_validate(_read_yaml(self.training_file))

    # Places under the data folder: one definition, used by every writer and by the
    # privacy inventory.
    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def truth_dir(self) -> Path:
        return self.raw_dir.parent / "truth"

    @property
    def scores_dir(self) -> Path:
        return self.data_dir / "scores"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def mlflow_db(self) -> Path:
        return self.data_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.data_dir / "mlartifacts"

    @property
    def feast_registry(self) -> Path:
        return self.data_dir / "registry.db"

    @property
    def feast_online(self) -> Path:
        return self.data_dir / "online.db"

    def with_overrides(self, **changes: object) -> "Settings":
        """A copy with some fields replaced (paths resolved from the root)."""
        raw = self.model_dump(exclude={"root"})
        raw.update(changes)
        return _build(self.root, raw)


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return loaded


_PATH_FIELDS = ("data_dir", "raw_dir", "feature_repo", "policy_file", "products_file", "training_file")


def _build(root: Path, raw: dict) -> Settings:
    raw = dict(raw)
    for key in _PATH_FIELDS:
        if key in raw and raw[key] is not None:
            p = Path(str(raw[key])).expanduser()
            raw[key] = p if p.is_absolute() else (root / p)
    try:
        return Settings(root=root, **raw)
    except ValueError as exc:
        raise ConfigError(f"invalid pipeline settings: {exc}") from exc


def find_conf(start: Path | None = None) -> Path:
    """The pipeline.yaml to use: $PROPENSITY_CONF, else conf/ of the nearest project root."""
    env = os.environ.get("PROPENSITY_CONF")
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "conf" / "pipeline.yaml"
        if candidate.is_file():
            return candidate
    packaged = Path(__file__).resolve().parents[2] / "conf" / "pipeline.yaml"
    if packaged.is_file():
        return packaged
    raise ConfigError(
        "no conf/pipeline.yaml found: run from the project folder or set PROPENSITY_CONF"
    )


def load_settings(conf: Path | str | None = None, **overrides: object) -> Settings:
    """Load ``pipeline.yaml`` (and the policy, catalogue and training files it names).

    Environment variables ``PROPENSITY_DATA_DIR``, ``PROPENSITY_RAW_DIR`` and
    ``PROPENSITY_SEED`` override the file; keyword ``overrides`` override both.
    Relative paths are resolved from the project root (the folder above conf/).
    """
    conf_path = Path(conf).resolve() if conf else find_conf()
    raw = _read_yaml(conf_path)
    root = conf_path.parent.parent
    data_env = os.environ.get("PROPENSITY_DATA_DIR")
    if data_env:
        raw["data_dir"] = data_env
        raw.setdefault("raw_dir", "data/raw")
        if "PROPENSITY_RAW_DIR" not in os.environ:
            raw["raw_dir"] = str(Path(data_env) / "raw")
    if os.environ.get("PROPENSITY_RAW_DIR"):
        raw["raw_dir"] = os.environ["PROPENSITY_RAW_DIR"]
    if os.environ.get("PROPENSITY_SEED"):
        raw["seed"] = int(os.environ["PROPENSITY_SEED"])
    if "data_dir" in overrides and "raw_dir" not in overrides:
        overrides["raw_dir"] = Path(str(overrides["data_dir"])) / "raw"
    raw.update(overrides)
    return _build(root, raw)
