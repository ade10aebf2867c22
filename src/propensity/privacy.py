"""Privacy operations (POLICY.md rules 7 and 8): the inventory of every store the project
writes, erasure across all of them, the retention purge and the access export.

**The inventory** (:func:`inventory`) declares each store under the data folder once: its
files (globs relative to the data folder), their kind, how a customer's rows are found in
it (:data:`FINDERS`) and its retention class. Erasure, the purge and the export walk this
one list, and the tests fail when a file under the data folder matches no entry: a new
store cannot be added without deciding how it is erased and purged.

**Erasure** (:func:`erase_customers`) first adds ``sha256(customer_id)`` to the
**suppression register** (``privacy/suppressed.parquet``, hex digests only), which the
feature build reads so that the bank's unchanged extracts do not bring the customer back,
and then removes the customer from every store: Parquet files are rewritten with DuckDB
``COPY ... TO`` a temporary file swapped in with ``os.replace`` (score partitions are
re-ranked, so no gap in the ranks betrays where the customer stood); CSV files are
rewritten; the Feast online store gets ``DELETE`` + ``VACUUM``; the customer's hashed
e-mail/phone are blanked wherever they appear in a matching export; stores that should
hold no customer data (MLflow, reports, logs) are scanned and a file or SQLite row that
holds the customer is deleted; the analysts' DuckDB file is re-created. Afterwards every
file under the data folder (the bank's ``raw/`` and ``truth/`` excepted) is scanned for
the id and the hashes. One **receipt** per customer goes to ``privacy/erasures/``: the
pseudonymous sha256 of the id, the time, rows removed per store, the scan's verdict and
which of the bank's raw files still hold the customer. Erasing twice removes nothing and
says so.

**Retention** (:func:`purge_plan`, :func:`apply_purge`): marketing data (features, the
online store, score partitions, campaign lists, matching exports, access exports) older
than ``retention.marketing_data_years``, campaign-log rows older than
``retention.contact_log_years``. The cutoff is midnight UTC of the day N years before the
as-of date D (29 February → 28 February): a row dated exactly D minus N years is kept, a
row one microsecond (or, for dated folders, one day) older is deleted.

**Access and portability** (:func:`access_document`, :func:`write_access_export`): one
JSON document (schema: ``docs/access-export-schema.md``) and an HTML page under
``privacy/exports/<sha256 of the id>/`` with everything the stores hold about a customer.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from propensity import matching, store, target, warehouse
from propensity.atomic import clear_stale_staging, staged_dir, write_bytes_atomic
from propensity.config import Settings
from propensity.consent import interval_at
from propensity.contract import locate
from propensity.duck import connect, sql_literal
from propensity.errors import JobLockedError, MissingInputError, PropensityError
from propensity.features import (
    MANIFEST,
    MEMBERSHIP,
    TIER_INTERVALS,
    retained_from,
    retention_mark,
    suppressed_hashes,
    suppression_register,
    view_specs,
    views_for_tier,
)
from propensity.policy import state_columns, tiers_as_of
from propensity.schema import TABLES
from propensity.score import partition_dir, run_lock, score_dates
from propensity.snapshots import snapshot_instant

Raw = Callable[[str], str]  # a table name -> its DuckDB FROM-expression (RawTables.relation)

RETENTION_CLASSES = ("marketing", "contact_log", "none")
KINDS = ("parquet", "csv", "sqlite", "json", "duckdb", "mlflow", "html", "text", "lock", "staging")
FINDERS = {
    "customer_id": "rows whose customer_id is the customer's",
    "customer_id_and_hashes": "rows whose customer_id is the customer's; in other rows, hash cells equal to the "
    "customer's hashed e-mail/phone are blanked",
    "hashes": "hash cells equal to the customer's hashed e-mail/phone are blanked; a row left without a hash is "
    "dropped (hashes from the export's members.parquet and recomputed from the raw customers table)",
    "entity_key": "online-store rows whose entity key is the Feast serialisation of the customer_id",
    "export_folder": "the folder named sha256(customer_id)",
    "scan": "expected to hold no customer data: a file (or SQLite row) holding the id or a hash is deleted",
    "no_ids": "holds no customer id by construction (counts, definitions); checked by the post-erasure scan",
    "pseudonymous": "holds sha256(customer_id) only, on purpose (suppression, receipts)",
    "recreate": "views only: the file is deleted and its views re-created, so no cached page remains",
    "transient": "leftovers of killed runs: deleted before erasing",
}
PRIVACY_FOLDER = "privacy"
RECEIPTS_FOLDER = "erasures"
EXPORTS_FOLDER = "exports"
EXPORT_SCHEMA = "propensity-access-export/1"
_ID_BOUNDARY = rb"[A-Za-z0-9_\-]"
STALE_TMP_SECONDS = 3600


class ErasureNotVerifiedError(PropensityError):
    """Files still hold an erased customer after erasure (the receipt names them)."""


class FutureDeletionError(PropensityError):
    """A deletion was asked for as of a day after today."""


def deletion_day(as_of: date | None, today: date | None = None) -> date:
    """The day a deletion (retention purge, matching-export purge) applies as of: ``as_of``,
    by default ``today`` (UTC unless given). A day after today is refused: deleting as of a
    later day would remove data still inside its retention period."""
    today = today or datetime.now(timezone.utc).date()
    if as_of is not None and as_of > today:
        raise FutureDeletionError(
            f"{as_of} is after today ({today}); deleting as of a later date would remove data still inside "
            "its retention period"
        )
    return as_of or today


# ------------------------------------------------------------------------ the inventory
@dataclass(frozen=True)
class Store:
    """One store the project writes under the data folder."""

    name: str
    patterns: tuple[str, ...]  # globs relative to the data folder
    kind: str
    finder: str  # a key of FINDERS
    retention: str  # a key of RETENTION_CLASSES
    purge_unit: str | None = None  # a key of the purge plan's units (None: not purged)
    dated_by: str = ""
    description: str = ""
    ranked: bool = False  # rank/decile are recomputed over the rows that remain
    excluding: tuple[str, ...] = ()  # globs of files the patterns match that belong to another store

    def files(self, data_dir: Path) -> list[Path]:
        found = {p for pattern in self.patterns for p in data_dir.glob(pattern) if p.is_file()}
        found -= {p for pattern in self.excluding for p in data_dir.glob(pattern)}
        return sorted(found)


def inventory(settings: Settings) -> tuple[Store, ...]:
    """Every store the project writes under the data folder."""
    marketing_folder = "the campaign spec's send_date (the whole folder)"
    return (
        # Every view file, also of a view the current definitions no longer have (a store
        # not rebuilt since the policy or catalogue changed still holds it).
        Store("feature_views", ("features/*.parquet",), "parquet", "customer_id", "marketing", "feature_rows",
              "event_timestamp", "offline feature store: one row per permitted customer-snapshot and view",
              excluding=(f"features/{TIER_INTERVALS}", f"features/{MEMBERSHIP}")),
        Store("tier_intervals", (f"features/{TIER_INTERVALS}",), "parquet", "customer_id", "none", None, "",
              "consent/reservation state intervals, rebuilt from the raw events by every build"),
        Store("membership", (f"features/{MEMBERSHIP}",), "parquet", "customer_id", "none", None, "",
              "customer_since/closed_at per customer, rebuilt from the raw customers by every build"),
        Store("feature_manifest", (f"features/{MANIFEST}",), "json", "no_ids", "none", None, "",
              "snapshots, policy version and row counts of the offline store"),
        Store("online_store", ("online.db", "online.db-journal", "online.db-wal", "online.db-shm"), "sqlite",
              "entity_key", "marketing", "online_rows", "event_ts",
              "Feast SQLite online store: the newest materialised snapshot"),
        Store("feast_registry", ("registry.db", "registry.db-journal", ".feast/**/*"), "sqlite", "scan", "none",
              None, "", "Feast registry: definitions only"),
        Store("mlflow_tracking", ("mlflow.db", "mlflow.db-journal"), "mlflow", "scan", "none", None, "",
              "MLflow runs, params, metrics, tags and the model registry (no training rows, by design)"),
        Store("mlflow_artifacts", ("mlartifacts/**/*",), "mlflow", "scan", "none", None, "",
              "MLflow artifacts: pickled models, HTML reports, summaries (no training rows, by design)"),
        Store("score_partitions", ("scores/score_date=*/*.parquet",), "parquet", "customer_id", "marketing",
              "score_partition", "the partition's score_date", "one row per customer x product and score date",
              ranked=True),
        Store("score_runs", ("scores/_runs/*.json",), "json", "no_ids", "none", None, "",
              "one record per scoring run: counts per tier, models, seconds"),
        Store("warehouse", ("warehouse.duckdb", "warehouse.duckdb.wal"), "duckdb", "recreate", "none", None, "",
              "the analysts' DuckDB views over the score partitions"),
        Store("campaign_lists", ("campaigns/*/list.parquet", "campaigns/*/members.parquet"), "parquet",
              "customer_id", "marketing", "campaign_folder", marketing_folder,
              "send files and members (treated and control) of each campaign"),
        Store("campaign_send_files", ("campaigns/*/list.csv",), "csv", "customer_id", "marketing", "campaign_folder",
              marketing_folder, "the send file as CSV"),
        Store("campaign_records", ("campaigns/*/manifest.json", "campaigns/*/reasons.json", "campaigns/*/reasons.csv"),
              "json", "no_ids", "marketing", "campaign_folder", marketing_folder, "spec, counts per reason, status"),
        Store("campaign_log", ("campaigns/campaign_log.parquet/part-*.parquet",), "parquet", "customer_id",
              "contact_log", "log_rows", "responded_at, else sent_at", "append-only log of contacts and responses"),
        Store("matching_members", ("matching/*/members.parquet",), "parquet", "customer_id_and_hashes", "marketing",
              "matching_folder", "the spec's send_date (the whole folder)", "customer_id with the hashes exported"),
        Store("matching_uploads", ("matching/*/upload.csv",), "csv", "hashes", "marketing", "matching_folder",
              "the spec's send_date (the whole folder)", "hashed e-mail/phone for the platform"),
        Store("matching_records", ("matching/*/manifest.json", "matching/*/reasons.csv"), "json", "no_ids",
              "marketing", "matching_folder", "the spec's send_date (the whole folder)", "spec, counts, deletion date"),
        Store("reports", ("reports/**/*",), "html", "scan", "none", None, "", "HTML reports (aggregates only)"),
        Store("job_logs", ("logs/**/*",), "text", "scan", "none", None, "", "output of scheduled jobs"),
        Store("suppression_register", (f"{PRIVACY_FOLDER}/suppressed.parquet",), "parquet", "pseudonymous", "none",
              None, "", "sha256 of every erased customer_id, read by the feature build"),
        Store("retention_mark", (f"{PRIVACY_FOLDER}/retention.json",), "json", "no_ids", "none", None, "",
              "the newest marketing retention cutoff a purge applied, read by the feature build"),
        Store("erasure_receipts", (f"{PRIVACY_FOLDER}/{RECEIPTS_FOLDER}/*.json",), "json", "pseudonymous", "none",
              None, "", "one receipt per erasure"),
        Store("access_exports", (f"{PRIVACY_FOLDER}/{EXPORTS_FOLDER}/*/*",), "json", "export_folder", "marketing",
              "access_export", "the export's generated_at", "access and portability exports (JSON + HTML)"),
        Store("locks", (".score.lock", "campaigns/.campaign.lock", f"{PRIVACY_FOLDER}/.privacy.lock"), "lock",
              "no_ids", "none", None, "", "job locks"),
        Store("leftovers", ("**/.*.staging-*/**/*", "**/.*.retired-*/**/*", "**/.*.tmp-*"), "staging",
              "transient", "none", None, "", "staging folders and temporary files of killed runs"),
    )


def inventory_frame(settings: Settings) -> pd.DataFrame:
    """The inventory as a table: store, files, kind, how rows are found, retention, dated by."""
    return pd.DataFrame(
        [
            {"store": s.name, "files": ", ".join(s.patterns), "kind": s.kind, "found_by": s.finder,
             "retention": s.retention, "dated_by": s.dated_by}
            for s in inventory(settings)
        ]
    )


def excluded_folders(settings: Settings) -> tuple[Path, ...]:
    """The bank's folders under the data folder (raw extracts, synthetic truth): not ours."""
    return (settings.raw_dir.resolve(), settings.truth_dir.resolve())


def data_files(settings: Settings) -> list[Path]:
    """Every file under the data folder except the bank's raw/ and truth/ folders."""
    root = settings.data_dir
    if not root.is_dir():
        return []
    skip = excluded_folders(settings)
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        resolved = path.resolve()
        if any(resolved.is_relative_to(folder) for folder in skip):
            continue
        out.append(path)
    return out


def uncovered_files(settings: Settings) -> list[str]:
    """Files under the data folder (raw/, truth/ excepted) that no inventory entry covers."""
    covered = {p for s in inventory(settings) for p in s.files(settings.data_dir)}
    return [str(p.relative_to(settings.data_dir)) for p in data_files(settings) if p not in covered]


# --------------------------------------------------------------------------- hashing
def customer_sha256(customer_id: str) -> str:
    """The pseudonym of a customer_id: hex sha256 of its UTF-8 bytes (DuckDB's ``sha256()``)."""
    return hashlib.sha256(str(customer_id).encode("utf-8")).hexdigest()


def add_to_register(settings: Settings, customer_ids: Iterable[str]) -> int:
    """Add the customers' hashes to the suppression register (atomically). Returns how many
    were new."""
    known = suppressed_hashes(settings)
    new = {customer_sha256(c) for c in customer_ids} - known
    if new:
        table = pa.table({"customer_sha256": pa.array(sorted(known | new), type=pa.string())})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_bytes_atomic(suppression_register(settings), sink.getvalue().to_pybytes())
    return len(new)


# ---------------------------------------------------------------------------- locking
@contextmanager
def exclusive(settings: Settings) -> Iterator[None]:
    """Hold the privacy, scoring and campaign locks: no job rewrites a store meanwhile."""
    folder = settings.data_dir / PRIVACY_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        for lock in (FileLock(str(folder / ".privacy.lock"), timeout=0), run_lock(settings)):
            try:
                lock.acquire()
            except Timeout:
                raise JobLockedError(f"another job holds {lock.lock_file}; wait for it to finish and run again") from None
            stack.callback(lock.release)
        stack.enter_context(target.campaign_lock(settings))
        yield


# ------------------------------------------------------------------------ file helpers
def _parquet(path: Path) -> str:
    return f"read_parquet({sql_literal(path)}, hive_partitioning = false)"


def _rewriting_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    con = connect(threads=settings.n_jobs)
    con.execute("SET preserve_insertion_order = true")  # rewritten files keep their row order
    return con


def _rewrite_parquet(con: duckdb.DuckDBPyConnection, path: Path, query: str) -> None:
    """Write ``query`` to a temporary sibling of ``path`` and swap it in atomically."""
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        con.execute(f"COPY ({query}) TO {sql_literal(tmp)} (FORMAT parquet, COMPRESSION zstd)")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reranked(query: str) -> str:
    # The rule of score.rank_within_product: rank 1 = highest probability per product, ties
    # by customer_id; decile = ceil(r * 10 / rows of the product), r the first rank of the
    # rows with the same probability (evaluation.deciles_by_rank).
    return f"""
        SELECT * EXCLUDE (rn) REPLACE (
            rn AS "rank",
            CAST(CEIL(CAST(MIN(rn) OVER t AS DOUBLE) * 10 / COUNT(*) OVER (PARTITION BY product)) AS BIGINT) AS decile
        )
        FROM (
            SELECT *, CAST(ROW_NUMBER() OVER (PARTITION BY product ORDER BY probability DESC, customer_id ASC) AS BIGINT) AS rn
            FROM ({query}) q
        )
        WINDOW t AS (PARTITION BY product, probability)
        ORDER BY product, "rank"
    """


def _retire(folder: Path) -> None:
    """Delete a folder: renamed first, so a half-deleted one is never read as live."""
    retired = folder.parent / f".{folder.name}.retired-{uuid.uuid4().hex[:8]}"
    os.replace(folder, retired)
    shutil.rmtree(retired)


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_bytes_atomic(path, frame.to_csv(index=False).encode("utf-8"))


def _string_columns(path: Path) -> list[str]:
    schema = pq.read_schema(path)
    out = []
    for f in schema:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            out.append(f.name)
    return out


def _needle_pattern(needles: Iterable[str]) -> re.Pattern[bytes] | None:
    """Any needle as a whole token (not inside a longer id) in raw bytes."""
    alternatives = sorted({n for n in needles if n}, key=len, reverse=True)
    if not alternatives:
        return None
    body = b"|".join(re.escape(n.encode("utf-8")) for n in alternatives)
    return re.compile(rb"(?<!" + _ID_BOUNDARY + rb")(?:" + body + rb")(?!" + _ID_BOUNDARY + rb")")


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


# --------------------------------------------------------------------- finding holdings
def values_held(con: duckdb.DuckDBPyConnection, path: Path, needles: set[str]) -> set[str]:
    """The needles a file holds: for Parquet, string cells equal to one; for any other
    file, a byte run equal to one (as a whole token)."""
    if not needles:
        return set()
    if _is_parquet(path):
        columns = _string_columns(path)
        if not columns:
            return set()
        cells = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in columns)
        listed = ", ".join("'" + n.replace("'", "''") + "'" for n in sorted(needles))
        rows = con.execute(
            f"SELECT DISTINCT v FROM (SELECT UNNEST([{cells}]) AS v FROM {_parquet(path)}) WHERE v IN ({listed})"
        ).fetchall()
        return {r[0] for r in rows}
    pattern = _needle_pattern(needles)
    found = {m.group(0).decode("utf-8") for m in pattern.finditer(path.read_bytes())} if pattern else set()
    return found & needles


def files_holding(settings: Settings, needles: dict[str, set[str]]) -> dict[str, list[str]]:
    """For each customer, the files under the data folder (the bank's raw/ and truth/
    excepted) holding their id or one of their hashes, relative to the data folder.

    ``needles``: customer_id -> the strings that identify them (the id, matching hashes).
    """
    owner = {n: cid for cid, values in needles.items() for n in values}
    out: dict[str, list[str]] = {cid: [] for cid in needles}
    con = connect(threads=settings.n_jobs)
    try:
        for path in data_files(settings):
            for needle in values_held(con, path, set(owner)):
                rel = str(path.relative_to(settings.data_dir))
                if rel not in out[owner[needle]]:
                    out[owner[needle]].append(rel)
    finally:
        con.close()
    return out


def matching_hash_pairs(settings: Settings, customer_ids: list[str], raw: Raw | None) -> dict[str, set[tuple[str, ...]]]:
    """Each customer's hashed matching identifiers (one tuple per policy field order, "" for
    none): from every export's members.parquet and recomputed from the raw customers."""
    policy = settings.policy
    columns = [matching.hash_column(f, policy) for f in policy.customer_matching.fields]
    out: dict[str, set[tuple[str, ...]]] = {c: set() for c in customer_ids}
    for path in sorted(matching.matching_dir(settings).glob("*/members.parquet")):
        frame = pd.read_parquet(path)
        present = [c for c in columns if c in frame.columns]
        rows = frame[frame["customer_id"].astype(str).isin(out)]
        for row in rows.itertuples(index=False):
            values = row._asdict()
            out[str(values["customer_id"])].add(tuple(_cell(values.get(c)) for c in columns if c in present))
    if raw is not None:
        customers = _raw_rows(raw, "customers", customer_ids, "customer_id, email, phone")
        if not customers.empty:
            hashed = matching.hashed_identifiers(customers, policy)
            for row in hashed.itertuples(index=False):
                values = row._asdict()
                out[str(values["customer_id"])].add(tuple(_cell(values.get(c)) for c in columns))
    return out


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _raw_rows(raw: Raw, table: str, customer_ids: list[str], columns: str = "*") -> pd.DataFrame:
    con = connect()
    try:
        con.register("_ids", pd.DataFrame({"customer_id": list(customer_ids)}, dtype=object))
        return con.execute(
            f"SELECT {columns} FROM {raw(table)} WHERE customer_id IN (SELECT customer_id FROM _ids) ORDER BY ALL"
        ).df()
    except (duckdb.Error, MissingInputError):
        return pd.DataFrame()
    finally:
        con.close()


def raw_relation(settings: Settings) -> tuple[Raw | None, str]:
    """The bank's raw tables as relations (found by file name, not validated: erasure and
    export must not be refused for a bad extract), or None and why."""
    try:
        return locate(settings.raw_dir).relation, ""
    except PropensityError as exc:
        return None, str(exc).splitlines()[0]


def raw_holdings(settings: Settings, customer_ids: list[str]) -> dict[str, list[dict]]:
    """Per customer, the bank's raw and truth files still holding them: path (relative to
    the folder above raw/) and rows."""
    out: dict[str, list[dict]] = {c: [] for c in customer_ids}
    files: list[tuple[Path, str]] = []
    try:
        raw = locate(settings.raw_dir)
        for name, paths in raw.files.items():
            if "customer_id" in TABLES[name].column_names:
                files += [(p, raw.formats[name]) for p in paths]
    except PropensityError:
        pass
    if settings.truth_dir.is_dir():
        files += [(p, "parquet") for p in sorted(settings.truth_dir.rglob("*.parquet"))]
    base = settings.raw_dir.parent.resolve()
    con = connect(threads=settings.n_jobs)
    try:
        con.register("_ids", pd.DataFrame({"customer_id": list(customer_ids)}, dtype=object))
        for path, fmt in files:
            scan = (
                f"read_csv({sql_literal(path)}, header = true, all_varchar = true)" if fmt == "csv" else _parquet(path)
            )
            try:
                counts = con.execute(
                    f"SELECT CAST(customer_id AS VARCHAR), COUNT(*) FROM {scan} "
                    "WHERE CAST(customer_id AS VARCHAR) IN (SELECT customer_id FROM _ids) GROUP BY ALL"
                ).fetchall()
            except duckdb.Error:
                continue  # a truth file without customer_id
            rel = str(path.resolve().relative_to(base)) if path.resolve().is_relative_to(base) else str(path)
            for cid, n in counts:
                out[cid].append({"path": rel, "rows": int(n)})
    finally:
        con.close()
    return out


# ---------------------------------------------------------------------------- erasure
@dataclass
class _Count:
    rows: int = 0
    files: int = 0


@dataclass
class _Erasure:
    settings: Settings
    con: duckdb.DuckDBPyConnection
    ids: list[str]
    pairs: dict[str, set[tuple[str, ...]]]

    def hashes(self) -> dict[str, str]:
        """hash value -> customer_id, for every non-empty hash of every customer."""
        return {h: cid for cid, pairs in self.pairs.items() for pair in pairs for h in pair if h}

    def needles(self) -> dict[str, set[str]]:
        return {cid: {cid} | {h for pair in self.pairs[cid] for h in pair if h} for cid in self.ids}

    def counts(self) -> dict[str, _Count]:
        return {cid: _Count() for cid in self.ids}


def _erase_rows(ctx: _Erasure, st: Store) -> dict[str, _Count]:
    out = ctx.counts()
    hash_columns = [matching.hash_column(f, ctx.settings.policy) for f in ctx.settings.policy.customer_matching.fields]
    hashes = ctx.hashes() if st.finder == "customer_id_and_hashes" else {}
    for path in st.files(ctx.settings.data_dir):
        if st.kind == "csv":
            frame = _read_csv(path)
            mask = frame["customer_id"].isin(ctx.ids)
            if mask.any():
                for cid, n in frame.loc[mask, "customer_id"].value_counts().items():
                    out[cid].rows += int(n)
                    out[cid].files += 1
                _write_csv(path, frame[~mask])
            continue
        counts = dict(
            ctx.con.execute(
                f"SELECT CAST(customer_id AS VARCHAR), COUNT(*) FROM {_parquet(path)} "
                "WHERE CAST(customer_id AS VARCHAR) IN (SELECT customer_id FROM _erase_ids) GROUP BY ALL"
            ).fetchall()
        )
        present = [c for c in hash_columns if c in _string_columns(path)] if hashes else []
        redacted = _hash_cells(ctx.con, path, present, hashes, exclude_ids=True) if present else {}
        if not counts and not redacted:
            continue
        query = f"SELECT * FROM {_parquet(path)} WHERE CAST(customer_id AS VARCHAR) NOT IN (SELECT customer_id FROM _erase_ids)"
        if present:
            listed = _sql_list(hashes)
            replace = ", ".join(f'CASE WHEN "{c}" IN ({listed}) THEN NULL ELSE "{c}" END AS "{c}"' for c in present)
            query = f"SELECT * REPLACE ({replace}) FROM ({query}) q"
        _rewrite_parquet(ctx.con, path, _reranked(query) if st.ranked else query)
        for cid in set(counts) | set(redacted):
            out[cid].rows += int(counts.get(cid, 0)) + redacted.get(cid, 0)
            out[cid].files += 1
    return out


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values))


def _hash_cells(con: duckdb.DuckDBPyConnection, path: Path, columns: list[str], hashes: dict[str, str],
                exclude_ids: bool) -> dict[str, int]:
    """Rows of other customers holding one of the hashes, per customer the hash belongs to."""
    if not hashes or not columns:
        return {}
    listed = _sql_list(hashes)
    where = " OR ".join(f'"{c}" IN ({listed})' for c in columns)
    skip = "AND CAST(customer_id AS VARCHAR) NOT IN (SELECT customer_id FROM _erase_ids)" if exclude_ids else ""
    selected = ", ".join(f'"{c}"' for c in columns)
    rows = con.execute(f"SELECT {selected} FROM {_parquet(path)} WHERE ({where}) {skip}").fetchall()
    out: dict[str, int] = {}
    for row in rows:
        for cid in {hashes[v] for v in row if v in hashes}:
            out[cid] = out.get(cid, 0) + 1
    return out


def _erase_hashes(ctx: _Erasure, st: Store) -> dict[str, _Count]:
    out = ctx.counts()
    hashes = ctx.hashes()
    if not hashes:
        return out
    for path in st.files(ctx.settings.data_dir):
        frame = _read_csv(path)
        columns = [c for c in frame.columns if c.endswith("_" + ctx.settings.policy.customer_matching.hash)]
        if not columns or frame.empty:
            continue
        hit = frame[columns].isin(set(hashes))
        touched = hit.any(axis=1)
        if not touched.any():
            continue
        for _, row in frame.loc[touched, columns].iterrows():
            for cid in {hashes[v] for v in row if v in hashes}:
                out[cid].rows += 1
        for cid in {hashes[v] for v in frame[columns].to_numpy().ravel() if v in hashes}:
            out[cid].files += 1
        blanked = frame[columns].mask(hit, "")
        kept = frame.assign(**{c: blanked[c] for c in columns})
        kept = kept[(kept[columns] != "").any(axis=1)]
        _write_csv(path, kept)
    return out


def _erase_online(ctx: _Erasure, st: Store) -> dict[str, _Count]:
    removed = store.erase_online_customers(ctx.settings, ctx.ids)
    return {cid: _Count(rows=n, files=1 if n else 0) for cid, n in removed.items()}


def _erase_exports(ctx: _Erasure, st: Store) -> dict[str, _Count]:
    out = ctx.counts()
    for cid in ctx.ids:
        folder = exports_dir(ctx.settings) / customer_sha256(cid)
        if folder.is_dir():
            out[cid].rows = out[cid].files = sum(1 for p in folder.rglob("*") if p.is_file())
            _retire(folder)
    return out


def _erase_scanned(ctx: _Erasure, st: Store) -> dict[str, _Count]:
    out = ctx.counts()
    needles = ctx.needles()
    owner = {n: cid for cid, values in needles.items() for n in values}
    for path in st.files(ctx.settings.data_dir):
        if not path.is_file() or path.name.endswith(("-journal", "-wal", "-shm")):
            continue  # a database's own journal: deleting it could corrupt the database
        if _is_sqlite(path):
            for cid, n in _erase_sqlite_rows(path, owner).items():
                out[cid].rows += n
                out[cid].files += 1
            continue
        held = values_held(ctx.con, path, set(owner))
        if held:
            path.unlink()
            for cid in {owner[n] for n in held}:
                out[cid].rows += 1
                out[cid].files += 1
    return out


def _erase_sqlite_rows(path: Path, owner: dict[str, str]) -> dict[str, int]:
    """Delete every row of any table holding a needle (as a whole token) in any column,
    then VACUUM. Expected to find none in MLflow's and Feast's databases."""
    pattern = _needle_pattern(owner)
    if pattern is None:
        return {}
    out: dict[str, int] = {}
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        doomed: dict[str, list[int]] = {}
        for table in tables:
            try:
                cursor = con.execute(f'SELECT rowid, * FROM "{table}"')
            except sqlite3.OperationalError:
                continue  # a WITHOUT ROWID table: left to the verification scan
            for row in cursor:
                for value in row[1:]:
                    data = value.encode("utf-8") if isinstance(value, str) else value if isinstance(value, bytes) else None
                    match = pattern.search(data) if data else None
                    if match:
                        cid = owner[match.group(0).decode("utf-8")]
                        out[cid] = out.get(cid, 0) + 1
                        doomed.setdefault(table, []).append(row[0])
                        break
        if doomed:
            with con:
                for table, rowids in doomed.items():
                    con.executemany(f'DELETE FROM "{table}" WHERE rowid = ?', [(r,) for r in rowids])
            con.execute("VACUUM")
    finally:
        con.close()
    return out


_ERASERS: dict[str, Callable[[_Erasure, Store], dict[str, _Count]]] = {
    "customer_id": _erase_rows,
    "customer_id_and_hashes": _erase_rows,
    "hashes": _erase_hashes,
    "entity_key": _erase_online,
    "export_folder": _erase_exports,
    "scan": _erase_scanned,
}


@dataclass(frozen=True)
class StoreErasure:
    store: str
    kind: str
    found_by: str
    rows_removed: int  # rows deleted or redacted (for stores erased file by file: files)
    files_changed: int


@dataclass(frozen=True)
class ErasureReceipt:
    receipt_id: str
    customer_sha256: str
    erased_at: datetime
    policy_version: str
    previously_suppressed: bool
    stores: list[StoreErasure]
    residual_files: list[str]
    raw_files: list[dict]
    raw_note: str
    path: Path

    @property
    def rows_removed(self) -> int:
        return sum(s.rows_removed for s in self.stores)

    @property
    def stores_touched(self) -> list[str]:
        return [s.store for s in self.stores if s.rows_removed or s.files_changed]

    @property
    def nothing_found(self) -> bool:
        return self.rows_removed == 0 and not any(s.files_changed for s in self.stores if s.found_by != "recreate")

    @property
    def verified(self) -> bool:
        return not self.residual_files

    def document(self) -> dict:
        return {
            "receipt_id": self.receipt_id,
            "customer_sha256": self.customer_sha256,
            "erased_at": self.erased_at.isoformat(),
            "policy_version": self.policy_version,
            "suppressed": True,
            "previously_suppressed": self.previously_suppressed,
            "nothing_found": self.nothing_found,
            "rows_removed_total": self.rows_removed,
            "stores_touched": self.stores_touched,
            "stores": [
                {"store": s.store, "kind": s.kind, "found_by": s.found_by, "rows_removed": s.rows_removed,
                 "files_changed": s.files_changed}
                for s in self.stores
            ],
            "verified": self.verified,
            "residual_files": self.residual_files,
            "raw_files_holding_customer": self.raw_files,
            "raw_note": self.raw_note,
        }


def receipts_dir(settings: Settings) -> Path:
    return settings.data_dir / PRIVACY_FOLDER / RECEIPTS_FOLDER


def exports_dir(settings: Settings) -> Path:
    return settings.data_dir / PRIVACY_FOLDER / EXPORTS_FOLDER


def _clear_leftovers(settings: Settings) -> None:
    for folder in (settings.data_dir, settings.features_dir, settings.scores_dir, target.campaigns_dir(settings),
                   target.log_dir(settings), matching.matching_dir(settings), exports_dir(settings)):
        clear_stale_staging(folder)
    # Temporary files of atomic writes: only old ones, a job that holds no lock we take
    # (training writing a report) may be writing one right now.
    horizon = datetime.now(timezone.utc).timestamp() - STALE_TMP_SECONDS
    for tmp in settings.data_dir.glob("**/.*.tmp-*"):
        if tmp.is_file() and tmp.stat().st_mtime < horizon and not any(
            tmp.resolve().is_relative_to(f) for f in excluded_folders(settings)
        ):
            tmp.unlink(missing_ok=True)


def _refresh_manifest(settings: Settings, con: duckdb.DuckDBPyConnection, keep_from: date | None = None) -> None:
    """Row counts (and, after a purge, snapshots) of the features manifest made true again."""
    path = settings.features_dir / MANIFEST
    if not path.is_file():
        return
    manifest = json.loads(path.read_text())
    if keep_from is not None:
        manifest["snapshots"] = [d for d in manifest.get("snapshots", []) if date.fromisoformat(d) >= keep_from]
    for name, view in manifest.get("views", {}).items():
        file = settings.features_dir / f"{name}.parquet"
        if file.is_file():
            view["rows"] = con.execute(f"SELECT COUNT(*) FROM {_parquet(file)}").fetchone()[0]
    write_bytes_atomic(path, json.dumps(manifest, indent=2).encode("utf-8"))


def _recreate_warehouse(settings: Settings) -> bool:
    """Delete the analysts' DuckDB file and re-create its views (nothing cached remains)."""
    path = settings.warehouse_path
    if not path.exists():
        return False
    path.unlink()
    Path(f"{path}.wal").unlink(missing_ok=True)
    warehouse.refresh(settings)
    return True


def erase_customers(
    settings: Settings,
    customer_ids: Iterable[str],
    now: datetime | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[ErasureReceipt]:
    """Erase customers from every store of the inventory and write one receipt each.

    Order: locks, suppression register (so a build started later leaves them out),
    leftovers of killed runs, each store, the analysts' DuckDB file, a scan of every file
    under the data folder for the ids and matching hashes, the receipts. Idempotent: a
    second run removes nothing and its receipt says ``nothing_found``. Refuses an empty
    or blank id.
    """
    ids = list(dict.fromkeys(str(c).strip() for c in customer_ids))
    if not ids or any(not c for c in ids):
        raise PropensityError("give at least one customer id (--customer ID); blank ids are refused")
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    raw, raw_note = raw_relation(settings)
    with exclusive(settings):
        before = suppressed_hashes(settings)
        added = add_to_register(settings, ids)
        progress(f"suppression register: {added} customer(s) added, {len(ids) - added} already in it")
        _clear_leftovers(settings)
        con = _rewriting_connection(settings)
        try:
            con.register("_erase_ids", pd.DataFrame({"customer_id": ids}, dtype=object))
            ctx = _Erasure(settings, con, ids, matching_hash_pairs(settings, ids, raw))
            results: list[tuple[Store, dict[str, _Count]]] = []
            for st in inventory(settings):
                eraser = _ERASERS.get(st.finder)
                counts = eraser(ctx, st) if eraser else ctx.counts()
                if st.name == "warehouse":
                    recreated = _recreate_warehouse(settings)
                    counts = {cid: _Count(files=int(recreated)) for cid in ids}
                results.append((st, counts))
                removed = sum(c.rows for c in counts.values())
                if removed:
                    progress(f"  {st.name:<22} {removed:>8,} row(s) removed")
            if any(r[1][c].rows for r in results if r[0].name == "feature_views" for c in ids):
                _refresh_manifest(settings, con)
        finally:
            con.close()
        residual = files_holding(settings, ctx.needles())
    holdings = raw_holdings(settings, ids)
    note = (
        "raw/ and truth/ hold the bank's extracts, which this project does not modify: the suppression register "
        "keeps the customer out of every later run; ask the bank's source systems to erase these rows"
    )
    if raw is None:
        note += f" (raw folder not readable: {raw_note})"
    receipts = []
    for cid in ids:
        digest = customer_sha256(cid)
        receipt_id = f"{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"
        receipt = ErasureReceipt(
            receipt_id=receipt_id,
            customer_sha256=digest,
            erased_at=now,
            policy_version=settings.policy.version,
            previously_suppressed=digest in before,
            stores=[StoreErasure(st.name, st.kind, st.finder, counts[cid].rows, counts[cid].files) for st, counts in results],
            residual_files=residual[cid],
            raw_files=holdings[cid],
            raw_note=note,
            path=receipts_dir(settings) / f"{receipt_id}.json",
        )
        write_bytes_atomic(receipt.path, json.dumps(receipt.document(), indent=2).encode("utf-8"))
        receipts.append(receipt)
    return receipts


def read_receipt(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- retention
def years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (29 February → 28 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def retention_cutoffs(settings: Settings, as_of: date) -> dict[str, datetime]:
    """Per retention class, the instant before which data is deleted: midnight UTC of the
    day N years before ``as_of`` (a row dated exactly that day is kept)."""
    rules = settings.policy.retention
    return {
        "marketing": datetime.combine(years_before(as_of, rules.marketing_data_years), time(0), tzinfo=timezone.utc),
        "contact_log": datetime.combine(years_before(as_of, rules.contact_log_years), time(0), tzinfo=timezone.utc),
    }


@dataclass(frozen=True)
class PurgeItem:
    """One thing the purge deletes: rows of a file, or a whole folder."""

    store: str
    path: str  # relative to the data folder
    action: str  # "delete_rows" | "delete_folder"
    rows: int  # rows deleted (for a folder: rows of its customer files, 0 if none)
    dated: str  # the date or instant that made it due
    cutoff: datetime
    keep_sql: str = ""  # for delete_rows of a Parquet file: the rows that stay


def _ts_literal(instant: datetime) -> str:
    return f"TIMESTAMPTZ '{instant.isoformat()}'"


def _due_rows(settings: Settings, st: Store, cutoff: datetime, time_sql: str) -> list[PurgeItem]:
    items = []
    keep = f"({time_sql}) IS NULL OR ({time_sql}) >= {_ts_literal(cutoff)}"
    con = connect(threads=settings.n_jobs)
    try:
        for path in st.files(settings.data_dir):
            rows, oldest = con.execute(f"SELECT COUNT(*), MIN({time_sql}) FROM {_parquet(path)} WHERE NOT ({keep})").fetchone()
            if rows:
                items.append(PurgeItem(st.name, str(path.relative_to(settings.data_dir)), "delete_rows", int(rows),
                                       f"oldest {oldest.isoformat()}", cutoff, keep))
    finally:
        con.close()
    return items


def _folder_rows(folder: Path) -> int:
    """Customer rows a folder holds: its members (campaigns, matching) or its partition
    rows (scores); the send file repeats members and is not counted twice."""
    con = connect()
    try:
        paths = [p for p in sorted(folder.glob("*.parquet")) if p.name != "list.parquet"]
        return int(sum(con.execute(f"SELECT COUNT(*) FROM {_parquet(p)}").fetchone()[0] for p in paths))
    finally:
        con.close()


def _due_folders(settings: Settings, st: Store, cutoff: datetime, folders: Iterable[tuple[Path, date | None]]) -> list[PurgeItem]:
    items = []
    for folder, dated in folders:
        # A published folder always has its date; one without is a leftover: deleted.
        if dated is None or dated < cutoff.date():
            items.append(PurgeItem(st.name, str(folder.relative_to(settings.data_dir)), "delete_folder",
                                   _folder_rows(folder), dated.isoformat() if dated else "undated", cutoff))
    return items


def _live_folders(parent: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in skip)


def _json_date(path: Path, *keys: str) -> date | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in keys:
        value = document
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                continue
    return None


def _purge_feature_rows(settings: Settings, st: Store, cutoff: datetime) -> list[PurgeItem]:
    return _due_rows(settings, st, cutoff, "event_timestamp")


def _purge_log_rows(settings: Settings, st: Store, cutoff: datetime) -> list[PurgeItem]:
    return _due_rows(settings, st, cutoff, "COALESCE(responded_at, sent_at)")


def _purge_online_rows(settings: Settings, st: Store, cutoff: datetime) -> list[PurgeItem]:
    rows = store.purge_online_rows(settings, cutoff, dry_run=True)
    return [PurgeItem(st.name, "online.db", "delete_rows", rows, f"event_ts before {cutoff.isoformat()}", cutoff)] if rows else []


def _purge_score_partitions(settings: Settings, st: Store, cutoff: datetime) -> list[PurgeItem]:
    return _due_folders(settings, st, cutoff, [(partition_dir(settings, d), d) for d in score_dates(settings)])


def _purge_campaign_folders(settings: Settings, st: Store, cutoff: datetime) -> list[PurgeItem]:
    folders = _live_folders(target.campaigns_dir(settings), skip=(target.LOG_FOLDER,))
    return _due_folders(settings, st, cutoff, [(f, _json_date(f / "manifest.json", "spec.send_date")) for f in folders])


def _purge_matching_folders(settings: Settings, st: Store, cutoff: datetime) -> list[PurgeItem]:
    folders = _live_folders(matching.matching_dir(settings))
    return _due_folders(settings, st, cutoff,
                        [(f, _json_date(f / "manifest.json", "send_date", "exported_at")) for f in folders])


def _purge_access_exports(settings: Settings, st: Store, cutoff: datetime) -> list[PurgeItem]:
    folders = _live_folders(exports_dir(settings))
    return _due_folders(settings, st, cutoff, [(f, _json_date(f / "export.json", "generated_at")) for f in folders])


PURGE_UNITS: dict[str, Callable[[Settings, Store, datetime], list[PurgeItem]]] = {
    "feature_rows": _purge_feature_rows,
    "online_rows": _purge_online_rows,
    "score_partition": _purge_score_partitions,
    "campaign_folder": _purge_campaign_folders,
    "matching_folder": _purge_matching_folders,
    "access_export": _purge_access_exports,
    "log_rows": _purge_log_rows,
}


def purge_plan(settings: Settings, as_of: date) -> list[PurgeItem]:
    """Everything the retention rules delete as of ``as_of``; nothing is changed."""
    cutoffs = retention_cutoffs(settings, as_of)
    items: list[PurgeItem] = []
    done: set[str] = set()
    for st in inventory(settings):
        if st.retention == "none" or st.purge_unit is None or st.purge_unit in done:
            continue
        done.add(st.purge_unit)
        items += PURGE_UNITS[st.purge_unit](settings, st, cutoffs[st.retention])
    return items


def purge_frame(items: list[PurgeItem]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"store": i.store, "path": i.path, "action": i.action, "rows": i.rows, "dated": i.dated,
          "cutoff": i.cutoff.date().isoformat()} for i in items],
        columns=["store", "path", "action", "rows", "dated", "cutoff"],
    )


def apply_purge(settings: Settings, items: list[PurgeItem], marketing_cutoff: datetime) -> None:
    """Delete what the plan lists (rows rewritten atomically, folders retired then removed)
    and record ``marketing_cutoff`` (the plan's, kept if an earlier purge recorded a later
    one) in the retention mark, so that the feature build does not put purged snapshots
    back from extracts that reach further into the past."""
    with exclusive(settings):
        _record_retention(settings, marketing_cutoff)
        if not items:
            return
        con = _rewriting_connection(settings)
        try:
            feature_cutoff: datetime | None = None
            for item in items:
                path = settings.data_dir / item.path
                if item.action == "delete_folder":
                    if path.is_dir():
                        _retire(path)
                elif item.store == "online_store":
                    store.purge_online_rows(settings, item.cutoff)
                elif path.is_file():
                    _rewrite_parquet(con, path, f"SELECT * FROM {_parquet(path)} WHERE {item.keep_sql}")
                    if item.store == "feature_views":
                        feature_cutoff = item.cutoff
            if feature_cutoff is not None:
                _refresh_manifest(settings, con, keep_from=feature_cutoff.date())
        finally:
            con.close()
        if settings.warehouse_path.exists():
            warehouse.refresh(settings)


def _record_retention(settings: Settings, marketing_cutoff: datetime) -> None:
    recorded = retained_from(settings)
    if recorded is not None and recorded >= marketing_cutoff:
        return
    document = {"marketing_cutoff": marketing_cutoff.isoformat(), "recorded_at": datetime.now(timezone.utc).isoformat()}
    write_bytes_atomic(retention_mark(settings), json.dumps(document, indent=2).encode("utf-8"))


# ------------------------------------------------------------------------ access export
def _records(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> list[dict]:
    cursor = con.execute(query, params or [])
    names = [d[0] for d in cursor.description]
    return [{k: plain(v) for k, v in zip(names, row)} for row in cursor.fetchall()]


def plain(value: object) -> object:
    """A JSON-ready value: ISO dates and UTC instants, None for missing, Python numbers."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        ts = pd.Timestamp(value)
        return (ts.tz_convert("UTC") if ts.tzinfo else ts).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def access_document(settings: Settings, raw: Raw | None, customer_id: str, now: datetime, raw_problem: str = "") -> dict:
    """Everything the project's stores hold about a customer, machine-readable.

    Sections: customer (the raw record the project reads), consents and reservations
    (every event and the state now), tier_intervals (as held by the feature store),
    features (every row per view, with its category), scores, processing (per scoring:
    purpose, tier, legal basis, FeatureService, the data categories and views it read),
    campaigns, campaign_log, bank_campaign_history, matching_exports, stores (rows held
    per store), not_read (section -> why it could not be read: ``raw`` is None, with
    ``raw_problem`` as the reason, or its table is absent or unreadable). Raises
    ``MissingInputError`` for a customer no store and no extract knows.
    """
    policy, catalogue = settings.policy, settings.catalogue
    cid = str(customer_id)
    data = settings.data_dir
    con = connect(threads=settings.n_jobs)
    try:
        con.register("_who", pd.DataFrame({"customer_id": [cid]}, dtype=object))
        where = "CAST(customer_id AS VARCHAR) = (SELECT customer_id FROM _who)"

        def rows_of(path: Path, order: str = "") -> list[dict]:
            if not path.is_file():
                return []
            return _records(con, f"SELECT * FROM {_parquet(path)} WHERE {where} {order}")

        # A raw section that cannot be read is named in ``not_read`` with the reason: the
        # document never passes an unread section off as "holds nothing".
        not_read: dict[str, str] = {}

        def raw_rows(section: str, table: str, order: str) -> list[dict]:
            if raw is None:
                not_read[section] = f"raw extracts not readable: {raw_problem or 'not given'}"
                return []
            try:
                return _records(con, f"SELECT * FROM {raw(table)} WHERE {where} ORDER BY {order}")
            except MissingInputError:
                not_read[section] = f"the raw folder has no {table} extract"
            except duckdb.Error as exc:
                not_read[section] = f"the raw {table} extract could not be read: {str(exc).splitlines()[0]}"
            return []

        customer = raw_rows("customer", "customers", "customer_id")
        consents = raw_rows("consents", "consent_events", "event_time, purpose")
        reservations = raw_rows("reservations", "reservation_events", "event_time, scope")
        bank_campaigns = raw_rows("bank_campaign_history", "campaign_log", "sent_at, campaign_id")
        intervals = rows_of(settings.features_dir / TIER_INTERVALS, "ORDER BY valid_from")
        features = []
        specs = {v.name: {"category": v.category, "group_company": v.group_company} for v in view_specs(policy, catalogue)}
        manifest = settings.features_dir / MANIFEST
        built = json.loads(manifest.read_text()).get("views", {}) if manifest.is_file() else {}
        for path in next(st for st in inventory(settings) if st.name == "feature_views").files(data):
            held = rows_of(path, "ORDER BY event_timestamp")
            if held:
                # A view the current definitions no longer have is exported too, described
                # as the build that wrote it recorded it (null when nothing did).
                about = specs.get(path.stem) or built.get(path.stem, {})
                features.append({"view": path.stem, "category": about.get("category"),
                                 "group_company": about.get("group_company"), "rows": held})
        scores = []
        for day in score_dates(settings):
            for path in sorted(partition_dir(settings, day).glob("*.parquet")):
                scores += rows_of(path, "ORDER BY product")
        campaigns = _campaign_sections(settings, con, where)
        log = []
        for path in sorted(target.log_dir(settings).glob("part-*.parquet")):
            log += [{**r, "part": path.name} for r in rows_of(path)]
        matching_exports = _matching_sections(settings, con, where)
    finally:
        con.close()

    known = customer or intervals or features or scores or campaigns or log or matching_exports or consents
    suppressed = customer_sha256(cid) in suppressed_hashes(settings)
    if not known and not suppressed:
        raise MissingInputError(f"customer {cid!r} is in neither the raw customers table nor any store under {data}")

    readable = raw is not None and "consents" not in not_read and "reservations" not in not_read
    state_now = _state_now(settings, consents, reservations, cid, now) if readable else {}
    return {
        "schema": EXPORT_SCHEMA,
        "customer_id": cid,
        "generated_at": now.astimezone(timezone.utc).isoformat(),
        "controller_note": "Produced by the propensity project under the marketing data policy; the bank's own "
        "systems answer for the source extracts.",
        "policy_version": policy.version,
        "erased": suppressed,
        "customer": customer[0] if customer else None,
        "consents": {"events": consents, "state_now": {k: v for k, v in state_now.items() if k.startswith("consent_")}},
        "reservations": {"events": reservations,
                         "state_now": {k: v for k, v in state_now.items() if k.startswith("reserved_")}},
        "tier_now": state_now.get("tier"),
        "tier_intervals": intervals,
        "features": features,
        "scores": scores,
        "processing": processing_records(settings, scores, intervals),
        "campaigns": campaigns,
        "campaign_log": log,
        "bank_campaign_history": bank_campaigns,
        "matching_exports": matching_exports,
        "online_store": "holds the feature values of the newest materialised snapshot: the same values as the "
        "features rows at that instant",
        "training": "models are trained on customer-snapshots of the tiers their categories allow (POLICY.md rule 3); "
        "no training row is stored by the project",
        "stores": _store_counts(features, intervals, scores, campaigns, log, matching_exports),
        "not_read": not_read,
    }


def _state_now(settings: Settings, consents: list[dict], reservations: list[dict], cid: str, now: datetime) -> dict:
    c = pd.DataFrame(consents, columns=["customer_id", "event_time", "purpose", "granted"])
    r = pd.DataFrame(reservations, columns=["customer_id", "event_time", "scope", "placed"])
    c["event_time"] = pd.to_datetime(c["event_time"], utc=True)
    r["event_time"] = pd.to_datetime(r["event_time"], utc=True)
    points = pd.DataFrame({"customer_id": [cid], "at": [pd.Timestamp(now).tz_convert("UTC")]})
    state = tiers_as_of(c, r, points, settings.policy).iloc[0]
    return {k: plain(state[k]) for k in [*state_columns(settings.policy), "tier"]}


def processing_records(settings: Settings, scores: list[dict], intervals: list[dict]) -> list[dict]:
    """Per scoring (score date x tier x model): the purpose, legal basis, FeatureService and
    the data categories and views it read for the customer (group-company views only when
    group data sharing was active at the snapshot instant)."""
    policy, catalogue = settings.policy, settings.catalogue
    if not scores:
        return []
    frame = pd.DataFrame(scores)
    held = pd.DataFrame(intervals)
    out = []
    keys = ["score_date", "tier", "legal_basis", "model_name", "model_version", "mlflow_run_id", "policy_version"]
    for values, group in frame.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, values))
        day = date.fromisoformat(str(row["score_date"])[:10])
        sharing = _sharing_at(held, group["customer_id"].iloc[0], day, settings)
        views = [v for v in views_for_tier(row["tier"], policy, catalogue) if sharing or not v.group_company]
        out.append({
            **row,
            "products": sorted(group["product"].unique().tolist()),
            "purpose": "direct marketing: propensity to take up the products listed (POLICY.md)",
            "feature_service": row["tier"],
            "categories": sorted({v.category for v in views}),
            "views": [v.name for v in views],
            "group_company_data": sharing,
            "policy_matches_current": row["policy_version"] == policy.version,
        })
    return out


def _sharing_at(intervals: pd.DataFrame, cid: str, day: date, settings: Settings) -> bool:
    if intervals.empty:
        return False
    frame = intervals.copy()
    frame["valid_from"] = pd.to_datetime(frame["valid_from"], utc=True)
    points = pd.DataFrame({"customer_id": [cid], "at": [pd.Timestamp(snapshot_instant(day))]})
    return bool(interval_at(frame, points, settings.policy)["group_data_sharing"].iloc[0])


def _campaign_sections(settings: Settings, con: duckdb.DuckDBPyConnection, where: str) -> list[dict]:
    out = []
    for folder in _live_folders(target.campaigns_dir(settings), skip=(target.LOG_FOLDER,)):
        members, listed = (
            _records(con, f"SELECT * FROM {_parquet(folder / name)} WHERE {where}") if (folder / name).is_file() else []
            for name in ("members.parquet", "list.parquet")
        )
        if not members and not listed:
            continue
        manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
        spec = manifest.get("spec", {})
        out.append({
            "campaign_id": folder.name, "product": spec.get("product"), "channel": spec.get("channel"),
            "send_at": manifest.get("send_at"), "status": manifest.get("status"), "score_date": manifest.get("score_date"),
            "membership": members, "send_file_rows": listed,
        })
    return out


def _matching_sections(settings: Settings, con: duckdb.DuckDBPyConnection, where: str) -> list[dict]:
    out = []
    for folder in _live_folders(matching.matching_dir(settings)):
        path = folder / "members.parquet"
        rows = _records(con, f"SELECT * FROM {_parquet(path)} WHERE {where}") if path.is_file() else []
        if not rows:
            continue
        manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
        out.append({
            "campaign_id": folder.name, "destination": manifest.get("destination"), "product": manifest.get("product"),
            "send_date": manifest.get("send_date"), "exported_at": manifest.get("exported_at"),
            "delete_on": manifest.get("delete_on"), "fields": manifest.get("fields"), "hash": manifest.get("hash"),
            "rows": rows,
        })
    return out


def _store_counts(features, intervals, scores, campaigns, log, matching_exports) -> dict[str, int]:
    return {
        "feature_views": sum(len(f["rows"]) for f in features),
        "tier_intervals": len(intervals),
        "score_partitions": len(scores),
        "campaign_lists": sum(len(c["membership"]) + len(c["send_file_rows"]) for c in campaigns),
        "campaign_log": len(log),
        "matching_members": sum(len(m["rows"]) for m in matching_exports),
    }


@dataclass(frozen=True)
class AccessExport:
    customer_sha256: str
    path: Path
    document: dict = field(repr=False)


def write_access_export(settings: Settings, document: dict) -> AccessExport:
    """Publish ``privacy/exports/<sha256>/export.json`` and ``export.html`` atomically."""
    digest = customer_sha256(document["customer_id"])
    folder = exports_dir(settings) / digest
    with staged_dir(folder) as staging:
        (staging / "export.json").write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
        (staging / "export.html").write_text(export_html(document), encoding="utf-8")
    return AccessExport(digest, folder, document)


def export_html(document: dict) -> str:
    """A self-contained, human-readable page of the export (every section as tables)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Your data</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:.2em .5em;font-size:90%;text-align:left}h2{margin-top:1.5em}</style>",
        "</head><body>",
        f"<h1>What we hold about customer {html.escape(str(document['customer_id']))}</h1>",
        f"<p>Generated {html.escape(document['generated_at'])} under policy version "
        f"{html.escape(document['policy_version'])}. The machine-readable version is export.json in the same folder.</p>",
    ]
    titles = {
        "customer": "Your customer record (as the project reads it)",
        "consents": "Consents: every event and the state now",
        "reservations": "Reservations: every event and the state now",
        "tier_intervals": "Marketing tier over time",
        "processing": "How your data was used at each scoring (purpose, legal basis, data categories)",
        "scores": "Scores",
        "features": "Feature values, per data category",
        "campaigns": "Campaign lists",
        "campaign_log": "Contacts and responses logged",
        "bank_campaign_history": "The bank's campaign history",
        "matching_exports": "Customer-matching exports (hashed e-mail/phone)",
        "stores": "Rows held per store",
    }
    for section, reason in document.get("not_read", {}).items():
        parts.append(f"<p><strong>Not read:</strong> {html.escape(section)}: {html.escape(reason)}</p>")
    for key, title in titles.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(_html_value(document.get(key)))
    parts.append(f"<p>Tier now: {html.escape(str(document.get('tier_now')))}. {html.escape(document['online_store'])}. "
                 f"{html.escape(document['training'])}.</p></body></html>")
    return "\n".join(parts)


def _html_value(value: object) -> str:
    if value is None or value == [] or value == {}:
        return "<p>None held.</p>"
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        if any(isinstance(x, (list, dict)) for v in value for x in v.values()):
            return "".join(_html_value(v) for v in value)
        columns = list(dict.fromkeys(k for v in value for k in v))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape('' if v.get(c) is None else str(v.get(c)))}</td>" for c in columns) + "</tr>"
            for v in value
        )
        return f"<table><tr>{head}</tr>{body}</table>"
    if isinstance(value, dict):
        rows = []
        for k, v in value.items():
            inner = _html_value(v) if isinstance(v, (list, dict)) else html.escape("" if v is None else str(v))
            rows.append(f"<tr><th>{html.escape(str(k))}</th><td>{inner}</td></tr>")
        return f"<table>{''.join(rows)}</table>"
    return f"<p>{html.escape(str(value))}</p>"

