"""`recsys-assets materialize` on the tiny simulator: runs a job per day into a real instance and prints
the summary table."""

import datetime as dt

import pytest

from recsys_assets import cli

from .conftest import tiny_env


@pytest.mark.slow
def test_materialize_prints_a_summary_and_records_the_runs(tmp_path, monkeypatch, capsys):
    import dagster as dg

    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # cli.main sets it for its instance; restored afterwards
    env = tiny_env(tmp_path, DAGSTER_HOME=str(home))
    rc = cli.main(["materialize", "--job", "data_prep_job", "--start", "2026-11-01", "--end", "2026-11-02"], env=env)
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.splitlines()
    header = next(line for line in lines if line.strip().startswith("day"))
    rows = [line for line in lines if line.strip().startswith("2026-11-0")]
    assert "raw rows" in header and len(rows) == 2 and all(" ok " in r for r in rows)
    assert f"outputs under {tmp_path / 'assets'}" in out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def test_a_lake_without_a_range_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    env = {
        "RECSYS_SOURCE": "lake",
        "RECSYS_SNAPSHOT_URL_TEMPLATE": str(tmp_path / "{date}"),
        "RECSYS_CATALOG_URI": str(tmp_path / "catalog"),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    with pytest.raises(SystemExit, match="--start and --end are required"):
        cli.main(["materialize"], env=env)


def test_publish_delivers_days_with_markers_and_redelivers(tmp_path, capsys):
    from recsys_assets.simulator.publish import snapshot_template
    from recsys_assets.sources.lake import snapshot_marker

    env = tiny_env(tmp_path)
    assert cli.main(["publish", "--start", "2026-11-01", "--end", "2026-11-02"], env=env) == 0
    assert "published 2026-11-02" in capsys.readouterr().out
    template = snapshot_template(tmp_path / "platform")
    first = snapshot_marker(template, dt.date(2026, 11, 2))
    assert first and snapshot_marker(template, dt.date(2026, 11, 3)) is None
    assert cli.main(["publish", "--start", "2026-11-02", "--end", "2026-11-02"], env=env) == 0
    assert snapshot_marker(template, dt.date(2026, 11, 2)) == first  # already delivered: untouched
    assert cli.main(["publish", "--start", "2026-11-02", "--end", "2026-11-02", "--redeliver"], env=env) == 0
    assert snapshot_marker(template, dt.date(2026, 11, 2)) != first
