"""The feature store: the only module that imports Feast.

``FeatureStore`` wraps a Feast store configured in code (DuckDB offline store, SQLite
online store and SQL registry under the data folder, so it works from any working
directory) and adds what Feast does not do: consent gating per customer and instant.

Retrieval (the second lock): every entity row is given its tier as of its own timestamp;
``excluded`` rows and rows of people who were not customers then are dropped before any
read; each remaining row is read through the FeatureService of a tier it may use.
The output guard (the third lock) then asserts that rows in equal rows out per service,
that no personalised-only column holds a value for a row that was not personalised, and
that no group-company column holds a value for a row without group data sharing. A
breach raises ``PrivacyGuardError``; nothing is silently fixed.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sqlite3
import sys
import uuid
import warnings
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.config import Settings
from propensity.consent import interval_at
from propensity.errors import MissingInputError, PrivacyGuardError, PropensityError
from propensity.features import (
    ENTITY,
    MEMBERSHIP,
    TIER_INTERVALS,
    TIMESTAMP,
    ViewSpec,
    personalised_only_columns,
    read_manifest,
    view_specs,
    views_for_tier,
)
from propensity.policy import customer_on, fingerprint, utc_us
from propensity.snapshots import snapshot_instant

SERVICES = ("personalised", "basic")
# How Feast serialises entity keys in the online store (also what erasure must match).
ENTITY_KEY_VERSION = 3
# Which services a tier's rows may be read through: a service's views must all be
# permitted to the tier. Personalised rows may feed a basic model (POLICY.md rule 3).
_SERVICE_ALLOWS = {"personalised": ("personalised",), "basic": ("personalised", "basic")}


def load_definitions(repo: Path):
    path = repo / "definitions.py"
    if not path.is_file():
        raise MissingInputError(f"the Feast repo {repo} has no definitions.py")
    spec = importlib.util.spec_from_file_location("propensity_feature_repo_definitions", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _unchecked(target=None, **_options):
    """Stands in for ``typeguard.typechecked`` (bare or with options): no instrumentation."""
    return target if target is not None else (lambda function: function)


def import_feast() -> None:
    """Import Feast, with typeguard's ``@typechecked`` as the identity while it loads.

    Feast decorates its API classes with ``@typechecked``. typeguard 4 instruments each
    decorated function when the module is imported, by re-parsing and re-compiling the
    module's source: about 4.5 s on two cores in every process that touches the store
    (typeguard issue #468). The checks catch callers passing wrong types to Feast's API;
    this module passes only objects it built, and the tests run the real calls. The real
    decorator is restored once Feast is loaded: modules imported after that keep it (a
    module first imported while Feast loads keeps the identity).
    """
    if "feast" in sys.modules:
        return
    import typeguard

    original = typeguard.typechecked
    typeguard.typechecked = _unchecked
    try:
        import feast  # noqa: F401
        import feast.feature_store  # noqa: F401
    finally:
        typeguard.typechecked = original


def feature_snapshots(settings: Settings) -> list[date]:
    """The month ends the published offline store holds features for, oldest first
    (``MissingInputError`` when none was built, or none is left after a retention purge).
    Reads the manifest only: no Feast."""
    snapshots = [date.fromisoformat(d) for d in read_manifest(settings)["snapshots"]]
    if not snapshots:
        raise MissingInputError(
            f"the feature store under {settings.features_dir} holds no snapshot (a retention purge may have removed "
            f"them all): run `propensity features build`"
        )
    return snapshots


class FeatureStore:
    """Consent-gated access to the Feast feature store of one data folder.

    Creating a Feast store costs seconds: make one per process and reuse it.
    """

    def __init__(self, settings: Settings):
        import_feast()
        from feast import FeatureStore as _FeastStore
        from feast.infra.registry.sql import SqlRegistryConfig
        from feast.repo_config import RepoConfig

        self.settings = settings
        self.policy = settings.policy
        self.catalogue = settings.catalogue
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._definitions = load_definitions(settings.feature_repo)
        config = RepoConfig(
            project="propensity",
            provider="local",
            registry=SqlRegistryConfig(
                registry_type="sql",
                path=f"sqlite:///{settings.feast_registry}",
                cache_ttl_seconds=60,
            ),
            online_store={"type": "sqlite", "path": str(settings.feast_online)},
            offline_store={"type": "duckdb"},
            entity_key_serialization_version=ENTITY_KEY_VERSION,
            repo_path=str(settings.feature_repo),
        )
        self._fs = _FeastStore(config=config)
        _undo_feast_warning_filters()
        self._objects = {obj.name: obj for obj in self._definitions.build(settings)}
        self._specs = {v.name: v for v in view_specs(self.policy, self.catalogue)}
        self._governance: tuple[pd.DataFrame, pd.DataFrame] | None = None
        self._published_checked = False

    # ----------------------------------------------------------------------- definitions
    def apply(self) -> list[str]:
        """Register the entity, views and services; remove views no longer defined. The
        published store is read afresh afterwards (a build may have replaced it)."""
        from feast import FeatureView

        self._governance, self._published_checked = None, False

        objects = list(self._objects.values())
        current = {v.name for v in objects if isinstance(v, FeatureView)}
        stale = [v for v in self._fs.list_feature_views() if v.name not in current]
        self._fs.apply(objects, objects_to_delete=stale, partial=False)
        return sorted(o.name for o in objects)

    def service(self, name: str):
        return self._fs.get_feature_service(name)

    def service_views(self, service: str) -> tuple[ViewSpec, ...]:
        return views_for_tier(service, self.policy, self.catalogue)

    def service_columns(self, service: str) -> list[str]:
        """Feature columns a service returns, in order (the model's input contract)."""
        return [n for v in self.service_views(service) for n in v.feature_names]

    def service_strings(self, service: str) -> list[str]:
        """The string (categorical) columns among :meth:`service_columns`."""
        return [name for v in self.service_views(service) for name, kind in v.features if kind == "str"]

    def service_categories(self, service: str) -> list[str]:
        return sorted({v.category for v in self.service_views(service)})

    def snapshots(self) -> list[date]:
        """The month ends the offline store holds features for, oldest first. Refuses a
        store that the current policy and definitions did not build (:func:`check_published`)."""
        self._check_published()
        return feature_snapshots(self.settings)

    def _check_published(self) -> None:
        if not self._published_checked:
            check_published(self.settings, self._specs.values())
            self._published_checked = True

    # ------------------------------------------------------------------------- governance
    def _governance_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._governance is None:
            folder = self.settings.features_dir
            if not (folder / TIER_INTERVALS).is_file():
                raise MissingInputError(f"no feature store built under {folder}: run `propensity features build`")
            self._check_published()
            self._governance = (pd.read_parquet(folder / TIER_INTERVALS), pd.read_parquet(folder / MEMBERSHIP))
        return self._governance

    def tiers(self, entity_df: pd.DataFrame) -> pd.DataFrame:
        """Tier and group data sharing of each entity row as of its own timestamp.

        People who were not customers at that instant are ``excluded`` (POLICY.md rule 4).
        Returns customer_id, event_timestamp, tier, group_data_sharing in input order.
        """
        intervals, membership = self._governance_tables()
        points = pd.DataFrame({ENTITY: entity_df[ENTITY].astype(str).to_numpy(), "at": utc_us(entity_df[TIMESTAMP]).array})
        states = interval_at(intervals, points, self.policy)
        members = points[[ENTITY]].merge(membership, on=ENTITY, how="left")
        day = points["at"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[D]")
        is_member = customer_on(members["customer_since"], members["closed_at"], day)
        tier = np.where(is_member, states["tier"].to_numpy(), "excluded")
        return pd.DataFrame(
            {
                ENTITY: points[ENTITY],
                TIMESTAMP: points["at"],
                "tier": tier,
                "group_data_sharing": states["group_data_sharing"].to_numpy(dtype=bool) & is_member,
            }
        )

    # -------------------------------------------------------------------------- retrieval
    def historical_features(self, entity_df: pd.DataFrame, service: str | None = None) -> dict[str, pd.DataFrame]:
        """Point-in-time features for entity rows (``customer_id``, ``event_timestamp``).

        With ``service=None`` each row is read through its own tier's service; with a
        service name, only the rows whose tier may use that service are read (for a basic
        model: basic and personalised rows, basic features only). Excluded rows and
        non-customers are dropped before any read. Extra entity columns are carried
        through. Returns one frame per service used, each with ``tier`` and
        ``group_data_sharing`` columns, in input row order.
        """
        if service is not None and service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}")
        frame = entity_df.reset_index(drop=True).copy()
        frame[TIMESTAMP] = utc_us(frame[TIMESTAMP])
        tiers = self.tiers(frame)
        frame["tier"] = tiers["tier"].to_numpy()
        frame["group_data_sharing"] = tiers["group_data_sharing"].to_numpy()
        frame["_row"] = np.arange(len(frame))
        out: dict[str, pd.DataFrame] = {}
        for name in [service] if service else SERVICES:
            wanted = frame[frame["tier"].isin(_SERVICE_ALLOWS[name])] if service else frame[frame["tier"] == name]
            if wanted.empty:
                continue
            out[name] = self._retrieve(wanted, name)
        return out

    def _retrieve(self, rows: pd.DataFrame, service: str) -> pd.DataFrame:
        # Feast joins the keys only; the caller's other columns are put back by row number
        # (a narrower entity frame is a cheaper point-in-time join). Ordering and adding
        # columns happen on the Arrow table, so the frame is converted to pandas once.
        import pyarrow as pa

        keys = rows[[ENTITY, TIMESTAMP, "_row"]].copy()
        table = self._point_in_time_job(keys, service).to_arrow()
        table = table.take(pa.array(np.argsort(table.column("_row").to_numpy(), kind="stable")))
        carried = rows.drop(columns=[ENTITY, TIMESTAMP]).sort_values("_row", kind="stable").reset_index(drop=True)
        _check_rows(rows, table.column("_row").to_numpy(), service)
        # "_row" stays out of the frame (dropping a column of a wide frame copies it all).
        names = [ENTITY, TIMESTAMP, *(c for c in carried.columns if c != "_row"),
                 *(c for c in table.column_names if c not in (ENTITY, TIMESTAMP, "_row"))]
        carried_arrow = pa.Table.from_pandas(carried, preserve_index=False)
        columns = [table.column(n) if n in table.column_names else carried_arrow.column(n) for n in names]
        result = pa.Table.from_arrays(columns, names=names).to_pandas()
        check_forbidden_values(result, self.settings)
        return result

    def _point_in_time_job(self, keys: pd.DataFrame, service: str):
        """Feast's point-in-time join (the DuckDB offline store's own ``ibis`` plan) of a
        service's views onto ``keys``, each view's source read only over the entity rows'
        time range: [earliest entity timestamp - the view's TTL, latest entity timestamp].

        A row outside that range can never match (the join keeps rows with
        ``ts <= entity ts`` and ``ts + ttl >= entity ts``), so the frame is the one
        ``feast.FeatureStore.get_historical_features`` returns; Feast's warehouse stores
        (BigQuery, Snowflake, Spark) narrow their sources the same way, its DuckDB store
        does not, and without it every snapshot of every view is scanned and projected.
        """
        import ibis
        from feast.infra.offline_stores.ibis import get_historical_features_ibis

        projections = self.service(service).feature_view_projections
        views = [self._fs.get_feature_view(p.name) for p in projections]
        refs = [f"{p.name_to_use()}:{f.name}" for p in projections for f in p.features]  # what the service selects
        earliest, latest = keys[TIMESTAMP].min(), keys[TIMESTAMP].max()
        # A view without a TTL (None or zero) looks back without limit: no lower bound then.
        ttl = {v.batch_source.name: v.ttl for v in views}

        def read_in_range(source, repo_path: str):
            table = ibis.read_parquet(source.path)
            ts = table[source.timestamp_field]
            in_range = ts <= ibis.literal(latest.to_pydatetime())
            if ttl[source.name]:
                in_range &= ts >= ibis.literal((earliest - ttl[source.name]).to_pydatetime())
            return table.filter(in_range)

        def no_writes(*_):
            raise NotImplementedError("retrieval jobs of the propensity store are not persisted")

        return get_historical_features_ibis(
            config=self._fs.config,
            feature_views=views,
            feature_refs=refs,
            entity_df=keys,
            registry=self._fs.registry,
            project=self._fs.project,
            full_feature_names=False,
            data_source_reader=read_in_range,
            data_source_writer=no_writes,
        )

    def guard(self, rows_in: pd.DataFrame, rows_out: pd.DataFrame, service: str) -> None:
        """The output lock: row counts kept, no forbidden value present. Raises, never fixes."""
        _check_rows(rows_in, rows_out["_row"].to_numpy(), service)
        check_forbidden_values(rows_out, self.settings)


    # ------------------------------------------------------------------------------ online
    def materialize(self, as_of: date) -> int:
        """Load the permitted feature rows of snapshot ``as_of`` into the online store.

        The online store is rebuilt from scratch, so it never keeps a row of an earlier
        snapshot that is no longer permitted. If loading fails part-way, the online store
        is put back as it was before the call (from a copy taken first, removed after).
        Returns the number of customers loaded.
        """
        snapshots = self.snapshots()  # refuses a store of another policy or definition, or an empty one
        if as_of not in snapshots:
            raise MissingInputError(f"no feature snapshot for {as_of}; built snapshots: {snapshots[0]} .. {snapshots[-1]}")
        _, membership = self._governance_tables()
        path = self.settings.feast_online
        # Named like every temporary file of the data folder (unique per call), so that the
        # privacy inventory covers a copy left by a killed process.
        copy = path.with_name(f".{path.name}.tmp-materialize-{uuid.uuid4().hex[:8]}") if path.exists() else None
        if copy is not None:
            try:
                _sqlite_copy(path, copy)
            except BaseException:
                copy.unlink(missing_ok=True)
                raise
        try:
            self.reset_online()
            instant = snapshot_instant(as_of)
            with _plain_stdout():  # Feast colours its progress lines; a log file gets them plain
                self._fs.materialize(start_date=instant - timedelta(hours=1), end_date=instant + timedelta(microseconds=1))
        except BaseException as failure:
            if copy is not None:
                _restore_online(copy, path, failure)
            raise
        if copy is not None:
            copy.unlink(missing_ok=True)
        return len(membership)

    def reset_online(self) -> None:
        """Empty the online store (every table of every view)."""
        path = self.settings.feast_online
        if path.exists():
            with sqlite3.connect(path) as con:
                tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for table in tables:
                    con.execute(f'DELETE FROM "{table}"')
            with sqlite3.connect(path) as con:
                con.execute("VACUUM")

    def online_features(self, customer_ids: list[str], at: date) -> dict[str, pd.DataFrame]:
        """Online look-up for customers, each through their tier's service as of ``at``
        (the materialised snapshot). Excluded customers get nothing."""
        entity = pd.DataFrame({ENTITY: [str(c) for c in customer_ids], TIMESTAMP: snapshot_instant(at)})
        tiers = self.tiers(entity)
        out: dict[str, pd.DataFrame] = {}
        for name in SERVICES:
            ids = tiers.loc[tiers["tier"] == name, ENTITY].tolist()
            if not ids:
                continue
            response = self._fs.get_online_features(
                features=self.service(name), entity_rows=[{ENTITY: i} for i in ids]
            ).to_df()
            response = response.merge(tiers[[ENTITY, "tier", "group_data_sharing"]], on=ENTITY, how="left")
            check_forbidden_values(response, self.settings)
            out[name] = response
        return out


def _undo_feast_warning_filters() -> None:
    """Feast adds ``simplefilter("once", DeprecationWarning)`` to the global filters on
    import, which overrides the application's own choice; take those entries out again."""
    warnings.filters[:] = [
        f for f in warnings.filters if not (f[0] == "once" and f[2] in (DeprecationWarning, RuntimeWarning) and f[1] is None)
    ]


def _check_rows(rows_in: pd.DataFrame, returned: np.ndarray, service: str) -> None:
    """Raise unless the rows returned (their entity row numbers, in order) are exactly the
    entity rows, each once, sorted."""
    if len(returned) != len(rows_in) or not np.array_equal(np.sort(rows_in["_row"].to_numpy()), returned):
        raise PrivacyGuardError(
            f"feature retrieval through service {service!r} returned {len(returned)} rows for "
            f"{len(rows_in)} entity rows; refusing a dataset that lost or gained rows"
        )


def check_published(settings: Settings, specs) -> None:
    """Refuse an offline store that the current policy and feature definitions did not
    build: tiers and permitted categories are decided at build time, so a store built
    under another policy version must not be read, and a view file without a column its
    definition has cannot serve it. ``MissingInputError`` naming what differs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = settings.features_dir
    rebuild = "rebuild it: `propensity features build`"
    manifest = read_manifest(settings)
    built_under = manifest.get("policy_version")
    if built_under != settings.policy.version:
        raise MissingInputError(
            f"the feature store under {folder} was built under policy version {built_under}, and the policy "
            f"({settings.policy_file.name}) is version {settings.policy.version}: {rebuild}"
        )
    # A store built before fingerprints were recorded is checked by version only.
    if manifest.get("policy_fingerprint", fingerprint(settings.policy)) != fingerprint(settings.policy):
        raise MissingInputError(
            f"the feature store under {folder} was built under another text of policy version {built_under} "
            f"({settings.policy_file.name} was edited without a version bump): {rebuild}"
        )
    for spec in specs:
        path = folder / f"{spec.name}.parquet"
        if not path.is_file():
            raise MissingInputError(f"the feature store under {folder} has no file for view {spec.name} ({path.name}): {rebuild}")
        try:
            present = set(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as exc:
            raise MissingInputError(f"the feature store under {folder} has an unreadable file for view {spec.name} "
                                    f"({path.name}: {exc}): {rebuild}") from None
        missing = [c for c in spec.feature_names if c not in present]
        if missing:
            raise MissingInputError(
                f"view {spec.name} in {path} lacks {len(missing)} column(s) of its definition "
                f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); the store was built by an older "
                f"feature definition: {rebuild}"
            )


class _AnsiStripper(io.TextIOBase):
    """A text stream that writes to ``target`` without ANSI colour codes."""

    _CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

    def __init__(self, target):
        self.target = target

    def write(self, text: str) -> int:
        self.target.write(self._CODES.sub("", text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()


@contextmanager
def _plain_stdout():
    """Standard output without colour codes unless it is a terminal."""
    if sys.stdout.isatty():
        yield
        return
    with redirect_stdout(_AnsiStripper(sys.stdout)):
        yield


def check_forbidden_values(frame: pd.DataFrame, settings: Settings) -> None:
    """Raise if a personalised-only column holds a value in a row that was not
    personalised, or a group-company column holds a value in a row without sharing."""
    policy, catalogue = settings.policy, settings.catalogue
    personalised_only = [c for c in personalised_only_columns(policy, catalogue) if c in frame.columns]
    if personalised_only and "tier" in frame.columns:
        not_personalised = frame["tier"].to_numpy() != "personalised"
        leaked = frame.loc[not_personalised, personalised_only].notna().any(axis=1)
        if leaked.any():
            sample = frame.loc[leaked[leaked].index, [ENTITY, TIMESTAMP, "tier"]].head(5).to_dict("records")
            raise PrivacyGuardError(
                f"{int(leaked.sum())} row(s) not in the personalised tier carry personalised-only "
                f"features ({', '.join(personalised_only[:5])}...): {sample}"
            )
    group_columns = [n for v in view_specs(policy, catalogue) if v.group_company for n in v.feature_names if n in frame.columns]
    if group_columns and "group_data_sharing" in frame.columns:
        no_sharing = ~frame["group_data_sharing"].to_numpy(dtype=bool)
        leaked = frame.loc[no_sharing, group_columns].notna().any(axis=1)
        if leaked.any():
            sample = frame.loc[leaked[leaked].index, [ENTITY, TIMESTAMP]].head(5).to_dict("records")
            raise PrivacyGuardError(
                f"{int(leaked.sum())} row(s) without group data sharing carry group-company features: {sample}"
            )


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy a SQLite database page by page into ``target`` (created or overwritten in
    place), consistent even while another connection has it open."""
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _restore_online(copy: Path, path: Path, failure: BaseException) -> None:
    """Copy the online store taken before a failed materialisation back into ``path``
    (the same file: Feast's open connection stays valid), then remove the copy. A copy
    that is gone, or a restore that fails, leaves the copy (if any) in place and says so."""
    rebuild = "run `propensity features build` to rebuild the online store"
    if not copy.is_file():
        raise PropensityError(
            f"loading the online store failed ({failure!r}) and its copy {copy.name} is gone: "
            f"{path.name} may be empty or partial; {rebuild}"
        ) from failure
    try:
        _sqlite_copy(copy, path)
    except Exception as exc:
        raise PropensityError(
            f"loading the online store failed ({failure!r}) and putting it back failed too ({exc!r}): "
            f"the copy taken before is kept at {copy}; {rebuild}"
        ) from failure
    copy.unlink(missing_ok=True)


def _online_tables(con: sqlite3.Connection) -> list[str]:
    """The online store's tables that hold entity rows (one per feature view)."""
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [t for t in tables if "entity_key" in {r[1] for r in con.execute(f'PRAGMA table_info("{t}")')}]


def erase_online_customers(settings: Settings, customer_ids: list[str]) -> dict[str, int]:
    """Delete every online-store row of these customers, then VACUUM so that no free page
    keeps them (Feast has no delete API). Returns rows removed per customer_id."""
    removed = {str(c): 0 for c in customer_ids}
    path = settings.feast_online
    if not path.is_file() or not removed:
        return removed
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    keys = {
        serialize_entity_key(EntityKey(join_keys=[ENTITY], entity_values=[Value(string_val=c)]), ENTITY_KEY_VERSION): c
        for c in removed
    }
    con = sqlite3.connect(path)
    try:
        with con:
            for table in _online_tables(con):
                for key, cid in keys.items():
                    removed[cid] += con.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', [key]).rowcount
        if any(removed.values()):
            con.execute("VACUUM")
    finally:
        con.close()
    return removed


def purge_online_rows(settings: Settings, before: datetime, dry_run: bool = False) -> int:
    """Delete online-store rows whose event time is before ``before`` (then VACUUM); with
    ``dry_run`` only count them. Feast stores event times as whole epoch seconds."""
    path = settings.feast_online
    if not path.is_file():
        return 0
    cutoff = int(before.timestamp())  # a row at cutoff - 1 µs is stored as cutoff - 1 s
    con = sqlite3.connect(path)
    try:
        with con:
            count = 0
            for table in _online_tables(con):
                verb = "SELECT COUNT(*)" if dry_run else "DELETE"
                cursor = con.execute(f'{verb} FROM "{table}" WHERE event_ts < ?', [cutoff])
                count += cursor.fetchone()[0] if dry_run else cursor.rowcount
        if count and not dry_run:
            con.execute("VACUUM")
    finally:
        con.close()
    return count


# ------------------------------------------------------------------- one customer, explained
@dataclass(frozen=True)
class ViewVerdict:
    view: str
    category: str
    permitted: bool
    verdict: str
    values: pd.DataFrame | None


@dataclass(frozen=True)
class FeatureReport:
    header: str
    tier: str
    sections: list[ViewVerdict]


def feature_report(store: "FeatureStore", customer_id: str, at: date) -> FeatureReport:
    """What the store holds for one customer at a snapshot, per view, and why each
    category was or was not permitted (tier, group data sharing)."""
    policy = store.policy
    snapshots = store.snapshots()
    if at not in snapshots:
        raise MissingInputError(f"no feature snapshot for {at}: features exist at month ends {snapshots[0]} .. {snapshots[-1]}")
    entity = pd.DataFrame({ENTITY: [customer_id], TIMESTAMP: [snapshot_instant(at)]})
    state = store.tiers(entity).iloc[0]
    tier, sharing = state["tier"], bool(state["group_data_sharing"])
    header = f"customer {customer_id} at {at}: tier {tier}" + (
        f" (legal basis: {policy.legal_basis[tier]})" if tier in policy.legal_basis else " (no processing)"
    ) + f"; group data sharing {'active' if sharing else 'not active'}"
    frames = store.historical_features(entity) if tier != "excluded" else {}
    row = next(iter(frames.values()), None)
    sections = []
    for spec in view_specs(policy, store.catalogue):
        allowed_tiers = spec.tiers(policy)
        if tier == "excluded":
            permitted, why = False, "not permitted: the customer is excluded (objection to profiling, or not a customer then)"
        elif tier not in allowed_tiers:
            permitted, why = False, f"not permitted: category {spec.category} is for tiers {', '.join(allowed_tiers)} only"
        elif spec.group_company and not sharing:
            permitted, why = False, f"not permitted: group-company data needs {policy.group_company.requires_consent} consent"
        else:
            permitted, why = True, f"permitted: tier {tier} may use {spec.category}" + (
                f" and {policy.group_company.requires_consent} is active" if spec.group_company else ""
            )
        values = None
        if permitted and row is not None:
            values = pd.DataFrame({"feature": list(spec.feature_names), "value": [row[n].iloc[0] for n in spec.feature_names]})
        sections.append(ViewVerdict(spec.name, spec.category, permitted, why, values))
    return FeatureReport(header, tier, sections)
