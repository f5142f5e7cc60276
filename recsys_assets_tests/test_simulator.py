import datetime as dt

import av
import numpy as np
import polars as pl
import pytest

from recsys_assets.simulator.platform import Platform
from recsys_assets.simulator.publish import catalog_uri, publish_catalog, publish_day
from recsys_assets.sources.lake import read_catalog
from recsys_assets.stages.filtered_interactions import filter_interactions
from recsys_assets.stages.raw_interactions import enforce_schema

D1, D2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)


def test_same_date_same_day_in_any_order():
    a, b = Platform("tiny", seed=5), Platform("tiny", seed=5)
    a1, a2 = a.interactions(D1), a.interactions(D2)
    b2, b1 = b.interactions(D2), b.interactions(D1)
    assert a1.equals(b1) and a2.equals(b2)
    assert not a1.equals(a2)
    assert not Platform("tiny", seed=6).interactions(D1).equals(a1)


def test_new_items_appear_every_day_and_only_after_upload(tiny_platform):
    cat = tiny_platform.catalog()
    p = tiny_platform.profile
    assert cat.filter(pl.col("upload_date") == p.start_date).height == p.new_items_per_day
    day = tiny_platform.interactions(D2, dirty=False)
    served = day.join(cat, on="item_id").select("upload_date")
    assert (served["upload_date"] <= D2).all()


def test_truth_predicts_observed_positives():
    """The exposed positive probability is calibrated on ordinary clients' rows."""
    plat = Platform("demo", seed=11)
    day = plat.interactions(D2, dirty=False)
    day = day.filter(~pl.Series(plat.is_bot(day["client_id"].to_numpy())))
    observed = ((day["pcc"] > 0.9) | day["liked"]).to_numpy()
    prob = plat.positive_probability(day["client_id"].to_numpy(), day["item_id"].to_numpy())
    bins = np.digitize(prob, [0.2, 0.4, 0.6, 0.8])
    for b in range(5):
        m = bins == b
        if m.sum() > 500:
            assert abs(observed[m].mean() - prob[m].mean()) < 0.06
    # and the affinity carries real signal: AUC of the truth on observed labels is far above chance
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(observed, prob) > 0.75


def test_bots_are_what_the_ctr_rule_removes():
    plat = Platform("demo", seed=11)
    res = filter_interactions(enforce_schema(plat.interactions(D2)).clean)
    kept = res.interactions["client_id"].unique().to_numpy()
    assert plat.is_bot(kept).mean() < 0.002
    assert res.stats["clients_dropped"] > 0


def test_dirty_rows_are_planted(tiny_platform):
    plat = Platform("demo", seed=11)
    out = enforce_schema(plat.interactions(D2))
    reasons = out.reason_counts()
    assert {"null_client_id", "null_item_id", "bad_pcc", "bad_timespent_s", "duplicate"} <= set(reasons)
    assert out.quarantine.height < 0.01 * out.clean.height


def test_publish_writes_real_media_and_a_delta_catalog(tmp_path, tiny_platform):
    uri = publish_catalog(tiny_platform, tmp_path, processes=2)
    assert uri == catalog_uri(tmp_path)
    cat = read_catalog(uri)
    assert cat.height == tiny_platform.profile.n_items
    url = cat["download_url"][0]
    assert url.startswith("file://")
    with av.open(url[len("file://") :]) as c:
        kinds = {s.type for s in c.streams}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert kinds == {"video", "audio"}
    assert frames[0].shape == (tiny_platform.profile.media_size,) * 2 + (3,)
    # published once: a second call does not re-render
    before = (tmp_path / "media").stat().st_mtime_ns
    publish_catalog(tiny_platform, tmp_path)
    assert (tmp_path / "media").stat().st_mtime_ns == before
    path = publish_day(tiny_platform, tmp_path, D1)
    assert pl.read_parquet(path).equals(tiny_platform.interactions(D1))


def test_media_differs_with_content(tmp_path, tiny_platform):
    from recsys_assets.simulator.media import render_audio, render_frames

    v1, v2 = tiny_platform.item_content[0], tiny_platform.item_content[1]
    f1 = render_frames(v1, seconds=1, size=16, fps=4)
    assert np.array_equal(f1, render_frames(v1, seconds=1, size=16, fps=4))
    assert not np.array_equal(f1, render_frames(v2, seconds=1, size=16, fps=4))
    assert not np.allclose(render_audio(v1, seconds=0.5), render_audio(v2, seconds=0.5))


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown simulator profile 'huge'"):
        Platform("huge")
