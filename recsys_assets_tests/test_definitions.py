import dagster as dg
import pytest

from recsys_assets.definitions import build_definitions, build_resources, defs
from recsys_assets.defs.resources import DeltaCatalogSource, ParquetSnapshotSource, SimulatedSnapshotSource

EXPECTED = {
    "als_factors",
    "als_user_factors",
    "als_evaluation",
    "raw_interactions",
    "raw_interactions_quarantine",
    "video_catalog",
    "filtered_interactions",
    "item_meta",
    "item_pairs",
    "item_content_embeddings",
    "pair_blip_scores",
    "content_encoder",
    "item_collab_embeddings",
    "content_encoder_evaluation",
    "item_pca",
    "two_tower_dataset",
    "two_tower_model",
    "two_tower_evaluation",
    "two_tower_ablations",
    "experiment_report",
}


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert EXPECTED <= keys


def test_every_dataset_shares_one_daily_partitioning():
    graph = defs.resolve_asset_graph()
    parts = {
        graph.get(k).partitions_def
        for k in graph.get_all_asset_keys()
        if k.to_user_string() not in ("experiment_report", "video_catalog_delta")  # neither is daily
    }
    assert len(parts) == 1 and isinstance(next(iter(parts)), dg.DailyPartitionsDefinition)


def test_blocking_checks_guard_what_feeds_downstream():
    graph = defs.resolve_asset_graph()
    specs = {(k.asset_key.to_user_string(), k.name): graph.get_check_spec(k).blocking for k in graph.asset_check_keys}
    assert specs[("filtered_interactions", "no_neutral_rows")] is True
    assert specs[("item_pairs", "pairs_canonical")] is True
    assert specs[("item_meta", "catalog_coverage")] is False
    assert specs[("item_content_embeddings", "media_coverage")] is True
    assert specs[("pair_blip_scores", "negatives_not_interacted")] is True
    assert {a for a, _ in specs} >= EXPECTED - {
        "raw_interactions_quarantine",
        "als_user_factors",
        "item_pca",
        "experiment_report",
    }


def test_job_and_schedule():
    assert defs.resolve_job_def("data_prep_job") is not None
    daily = defs.resolve_job_def("daily_job")
    assert {k.to_user_string() for k in daily.asset_layer.executable_asset_keys} >= {
        "item_pairs",
        "als_factors",
        "als_evaluation",
    }
    assert defs.resolve_schedule_def("daily_job_schedule").cron_schedule == "0 3 * * *"
    assert "experiment_report" not in {k.to_user_string() for k in daily.asset_layer.executable_asset_keys}
    report = defs.resolve_job_def("report_job")
    assert {k.to_user_string() for k in report.asset_layer.executable_asset_keys} == {"experiment_report"}


def test_sources_are_chosen_by_env(tmp_path):
    sim = build_resources({"RECSYS_DATA_DIR": str(tmp_path)})
    assert isinstance(sim["snapshots"], SimulatedSnapshotSource)
    lake = build_resources(
        {
            "RECSYS_SOURCE": "lake",
            "RECSYS_SNAPSHOT_URL_TEMPLATE": "s3://b/snap/dt={date}/",
            "RECSYS_CATALOG_URI": "s3://b/video",
            "RECSYS_STORAGE_URL": "s3://b/assets",
        }
    )
    assert isinstance(lake["snapshots"], ParquetSnapshotSource) and isinstance(lake["catalog"], DeltaCatalogSource)
    assert lake["io_manager"].base_url == "s3://b/assets"
    dg.Definitions.validate_loadable(
        build_definitions(
            {"RECSYS_SOURCE": "lake", "RECSYS_SNAPSHOT_URL_TEMPLATE": "x/{date}", "RECSYS_CATALOG_URI": "y"}
        )
    )
    with pytest.raises(ValueError, match="needs RECSYS_SNAPSHOT_URL_TEMPLATE"):
        build_resources({"RECSYS_SOURCE": "lake"})
    with pytest.raises(ValueError, match="'simulator' or 'lake'"):
        build_resources({"RECSYS_SOURCE": "kafka"})


def test_content_resources_are_chosen_by_env(tmp_path):
    res = build_resources({"RECSYS_DATA_DIR": str(tmp_path)})
    assert res["media_fetch"].allowed_roots == [str((tmp_path / "platform" / "media").resolve())]
    assert res["content_models"].image_pretrained is None  # random weights unless configured
    assert res["embedding_cache"].base_url.endswith("/_cache/item_content_embeddings")
    lake = build_resources(
        {
            "RECSYS_SOURCE": "lake",
            "RECSYS_SNAPSHOT_URL_TEMPLATE": "s3://b/snap/dt={date}/",
            "RECSYS_CATALOG_URI": "s3://b/video",
            "RECSYS_MEDIA_ALLOWED_HOSTS": "cdn.example.com, media-bucket",
            "RECSYS_MEDIA_ALLOWED_SCHEMES": "https,s3",
            "RECSYS_IMAGE_MODEL": "ViT-B-32",
            "RECSYS_IMAGE_PRETRAINED": "/weights/vit-b-32.safetensors",
            "RECSYS_AUDIO_MODEL": "base",
            "RECSYS_AUDIO_CHECKPOINT": "s3://weights/base.pt",
        }
    )
    policy = lake["media_fetch"].policy()
    assert policy.allowed_hosts == ("cdn.example.com", "media-bucket") and policy.allowed_schemes == ("https", "s3")
    assert policy.allowed_roots == ()
    spec = lake["content_models"].spec()
    assert (spec.image_model, spec.image_pretrained, spec.audio_model, spec.audio_checkpoint) == (
        "ViT-B-32",
        "/weights/vit-b-32.safetensors",
        "base",
        "s3://weights/base.pt",
    )


def test_the_start_date_is_a_setting_of_build_definitions():
    d = build_definitions({"RECSYS_START_DATE": "2026-10-01"})
    graph = d.resolve_asset_graph()
    starts = {
        graph.get(k).partitions_def.start.date().isoformat()
        for k in graph.get_all_asset_keys()
        if graph.get(k).partitions_def is not None
    }
    assert starts == {"2026-10-01"}
    assert d.resolve_job_def("daily_job").partitions_def.start.date().isoformat() == "2026-10-01"


def test_settings_name_the_variable_that_is_wrong():
    from recsys_assets.settings import Settings

    with pytest.raises(ValueError, match="RECSYS_START_DATE must be YYYY-MM-DD"):
        Settings.from_env({"RECSYS_START_DATE": "1st of November"})
    with pytest.raises(ValueError, match="RECSYS_SIM_SEED must be an integer"):
        Settings.from_env({"RECSYS_SIM_SEED": "seven"})
    s = Settings.from_env({"RECSYS_SIM_PROFILE": "tiny"})
    assert s.default_range()[0].isoformat() == "2026-11-01"
    with pytest.raises(ValueError, match="range of days is required"):
        Settings.from_env(
            {"RECSYS_SOURCE": "lake", "RECSYS_SNAPSHOT_URL_TEMPLATE": "x", "RECSYS_CATALOG_URI": "y"}
        ).default_range()
