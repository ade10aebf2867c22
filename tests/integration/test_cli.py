"""The command line as an operator meets it: exit codes and messages on good and bad input."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from propensity.cli import app

runner = CliRunner()


@pytest.fixture()
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("PROPENSITY_DATA_DIR", str(tmp_path))
    return tmp_path


def test_synth_then_validate_succeeds_and_prints_a_summary(data):
    result = runner.invoke(app, ["synth", "--customers", "60", "--months", "3", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert (data / "raw" / "transactions.parquet").is_file() and (data / "truth" / "product_hazard.parquet").is_file()
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "customers" in result.output


def test_validate_refuses_a_broken_table_naming_table_column_and_rows(data):
    runner.invoke(app, ["synth", "--customers", "60", "--months", "3", "--seed", "3"])
    path = data / "raw" / "customers.parquet"
    table = pq.read_table(path)
    brands = table.column("brand").to_pylist()
    brands[0] = "nordea"
    pq.write_table(table.set_column(table.schema.get_field_index("brand"), "brand", [brands]), path)
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 1
    assert "unknown_enum" in result.output and "customers.brand" in result.output and "nordea" in result.output


def test_a_malformed_date_is_a_usage_error_not_a_traceback(data):
    result = runner.invoke(app, ["score", "--date", "2025-13-01"])
    assert result.exit_code == 2
    assert "is not a date" in result.output and "Traceback" not in result.output


def test_scoring_without_a_feature_store_says_what_to_run(data):
    result = runner.invoke(app, ["score"])
    assert result.exit_code == 1
    assert "propensity features build" in result.output


@pytest.mark.parametrize(
    "args, option",
    [
        (["campaign", "evaluate", "any", "--confidence", "95"], "--confidence"),
        (["explain", "--customer", "C1", "--product", "mortgage", "--top", "0"], "--top"),
    ],
)
def test_an_out_of_range_option_is_a_usage_error_naming_it(data, args, option):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and option in result.output and "Traceback" not in result.output


def test_an_unknown_tier_is_refused_before_anything_is_written(data):
    result = runner.invoke(app, ["train", "--tiers", "personalized"])
    assert result.exit_code == 1 and "unknown tier(s) ['personalized']" in result.output
    assert list(data.iterdir()) == []  # no Feast registry, no MLflow store


def test_a_store_built_under_another_policy_version_is_one_message_and_exit_1(data):
    import json

    assert runner.invoke(app, ["synth", "--customers", "60", "--months", "3", "--seed", "3"]).exit_code == 0
    result = runner.invoke(app, ["features", "build"])
    assert result.exit_code == 0, result.output
    manifest = data / "features" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "policy_version": "2020.1"}))
    result = runner.invoke(app, ["score"])
    assert result.exit_code == 1
    assert "policy version 2020.1" in result.output and "propensity features build" in result.output
    assert "Traceback" not in result.output
    assert not (data / "scores").exists()  # nothing written
