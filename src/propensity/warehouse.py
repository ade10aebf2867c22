"""The analysts' DuckDB database: views over the score partitions and run records.

``data/warehouse.duckdb`` holds only views (no copy of any score), rebuilt from the files
on every refresh, so it never disagrees with the Parquet partitions and erasing a row
from a partition erases it from the views.

Views:
  scores         every partition (one row per customer x product x score date)
  latest_scores  the newest score date only
  scores_wide    the newest score date, one row per customer, a probability column per product
  score_runs     one row per scoring run: date, counts per tier, models used, seconds
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from propensity.config import Settings
from propensity.duck import connect, sql_literal
from propensity.errors import PropensityError

_EMPTY_SCORES = """
    SELECT NULL::VARCHAR AS customer_id, NULL::DATE AS score_date, NULL::VARCHAR AS product,
           NULL::DOUBLE AS probability, NULL::BIGINT AS rank, NULL::BIGINT AS decile, NULL::VARCHAR AS tier,
           NULL::VARCHAR AS legal_basis, NULL::VARCHAR AS model_name, NULL::VARCHAR AS model_version,
           NULL::VARCHAR AS mlflow_run_id, NULL::VARCHAR AS policy_version, NULL::TIMESTAMPTZ AS scored_at,
           NULL::VARCHAR AS run_id
    WHERE false
"""
_EMPTY_RUNS = """
    SELECT NULL::VARCHAR AS run_id, NULL::DATE AS score_date, NULL::TIMESTAMPTZ AS scored_at, NULL::BIGINT AS rows,
           NULL::BIGINT AS customers_personalised, NULL::BIGINT AS customers_basic,
           NULL::BIGINT AS customers_excluded, NULL::VARCHAR AS models, NULL::DOUBLE AS seconds
    WHERE false
"""


def view_statements(settings: Settings) -> list[str]:
    scores_dir = settings.scores_dir
    partitions = list(scores_dir.glob("score_date=*/*.parquet"))
    runs = list((scores_dir / "_runs").glob("*.json"))
    scores_src = (
        f"SELECT * FROM read_parquet({sql_literal(scores_dir / 'score_date=*' / '*.parquet')}, hive_partitioning = false)"
        if partitions
        else _EMPTY_SCORES
    )
    runs_src = (
        "SELECT run_id, CAST(score_date AS DATE) AS score_date, CAST(scored_at AS TIMESTAMPTZ) AS scored_at, rows, "
        "customers_personalised, customers_basic, customers_excluded, models, seconds "
        f"FROM read_json_auto({sql_literal(scores_dir / '_runs' / '*.json')})"
        if runs
        else _EMPTY_RUNS
    )
    wide = ",\n".join(
        f"MAX(probability) FILTER (WHERE product = '{p}') AS {p}" for p in settings.catalogue.ids
    )
    return [
        f"CREATE OR REPLACE VIEW scores AS {scores_src}",
        "CREATE OR REPLACE VIEW latest_scores AS SELECT * FROM scores WHERE score_date = (SELECT MAX(score_date) FROM scores)",
        f"""CREATE OR REPLACE VIEW scores_wide AS
            SELECT customer_id, score_date, ANY_VALUE(tier) AS tier, {wide}
            FROM latest_scores GROUP BY customer_id, score_date""",
        f"CREATE OR REPLACE VIEW score_runs AS {runs_src}",
    ]


def refresh(settings: Settings) -> Path:
    """(Re)create the views in ``warehouse.duckdb``; returns its path."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    con = connect(settings.warehouse_path, threads=settings.n_jobs)
    try:
        for statement in view_statements(settings):
            con.execute(statement)
    finally:
        con.close()
    return settings.warehouse_path


def query(settings: Settings, sql: str) -> pd.DataFrame:
    """Run an analyst's query against the views, in a private in-memory database: the file
    is not opened, so queries never wait for each other, for a scoring run or for an
    analyst's own session on ``warehouse.duckdb``."""
    if not sql.strip():
        raise PropensityError("empty query: give a SELECT over scores, latest_scores, scores_wide or score_runs")
    con = connect(threads=settings.n_jobs)
    try:
        for statement in view_statements(settings):
            con.execute(statement)
        result = con.execute(sql)
        if result is None or result.description is None:
            raise PropensityError(f"the statement returned no rows to print: {sql.strip()[:80]!r}; give a query (SELECT ...)")
        types = [str(kind) for _, kind, *_ in result.description]  # by position: names may repeat
        frame = result.df()
    except duckdb.Error as exc:
        raise PropensityError(f"query failed: {exc}") from exc
    finally:
        con.close()
    # As SQL typed them: a DATE is a date (not a midnight timestamp), a sum of integers
    # (HUGEINT, which pandas reads as float) an integer.
    for position, kind in enumerate(types[: frame.shape[1]]):
        column = frame.iloc[:, position]
        if kind == "DATE" and column.dtype.kind == "M":
            frame.isetitem(position, column.dt.date)
        elif kind == "HUGEINT" and column.dtype.kind == "f" and (column.dropna().abs() < 2**53).all():
            frame.isetitem(position, column.astype("Int64"))  # exact below 2**53; larger sums stay floats
    return frame
