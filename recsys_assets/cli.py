"""``recsys-assets``: materialize the pipeline for a range of days from a terminal, into the same
Dagster instance the UI reads (``$DAGSTER_HOME``, default ``./.dagster_home``), then print a summary.

    recsys-assets materialize                      # the simulator profile's natural range
    recsys-assets materialize --start 2026-11-03 --end 2026-11-05
"""

import argparse
import datetime as dt
import os
import sys
import time
import typing

from .settings import Settings


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _ratio(md: dict, num: str, den: str) -> str | None:
    a, b = md.get(num), md.get(den)
    if isinstance(a, float) and isinstance(b, float) and b:
        return f"{a:.3f}/{b:.3f}"
    return None


def materialize(args: argparse.Namespace, settings: Settings) -> int:
    import socket

    from .definitions import build_definitions
    from .defs.instance import HOST_TAG, fail_dead_runs, open_instance

    home = str(settings.dagster_home)
    os.environ["DAGSTER_HOME"] = home  # for anything in the run that asks Dagster for "the" instance
    instance = open_instance(home)
    for run_id in fail_dead_runs(instance):
        print(f"marked failed: run {run_id}, whose process had died without an end", file=sys.stderr)

    defs = build_definitions(settings)
    if args.start and args.end:
        start, end = args.start, args.end
    else:
        try:
            start, end = settings.default_range()
        except ValueError as e:
            raise SystemExit(f"--start and --end are required: {e}") from None
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    job = defs.resolve_job_def(args.job)
    run_config = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    rows, failed = [], 0
    new_eval: dict[dt.date, str | None] = {}  # evaluation D scores the never-played uploads of D-1
    t0 = time.time()
    for day in days:
        t = time.time()
        res = job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            run_config=run_config,
            raise_on_error=False,
            tags={HOST_TAG: socket.gethostname()},
        )
        md = {}
        for ev in res.get_asset_materialization_events():
            m = ev.materialization
            md[m.asset_key.to_user_string()] = {k: getattr(v, "value", v) for k, v in m.metadata.items()}
        checks = res.get_asset_check_evaluations()
        bad = [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed]
        failed += 0 if res.success else 1
        fi, pairs, ev = md.get("filtered_interactions", {}), md.get("item_pairs", {}), md.get("als_evaluation", {})

        def r50(k: str, ev: dict = ev) -> str | None:
            return f"{ev[k]:.3f}" if isinstance(ev.get(k), float) else None

        cee = md.get("content_encoder_evaluation", {})
        new_r50 = [cee.get(f"new_{v}_recall@50") for v in ("predicted", "random", "oracle")]
        if isinstance(new_r50[0], float):
            new_eval[day - dt.timedelta(days=1)] = "/".join("-" if v is None else f"{v:.2f}" for v in new_r50)
        collab = md.get("item_collab_embeddings", {})
        fresh = collab.get("new_uploads_never_interacted")

        rows.append(
            [
                day.isoformat(),
                "ok" if res.success else "FAILED",
                md.get("raw_interactions", {}).get("dagster/row_count"),
                md.get("raw_interactions", {}).get("rows_quarantined"),
                fi.get("positive"),
                fi.get("negative"),
                fi.get("neutral"),
                fi.get("clients_dropped"),
                md.get("item_meta", {}).get("dagster/row_count"),
                pairs.get("positive_pairs"),
                pairs.get("negative_pairs"),
                md.get("als_factors", {}).get("dagster/row_count"),
                r50("als_recall@50"),
                r50("popularity_recall@50"),
                md.get("item_content_embeddings", {}).get("decoded"),
                md.get("item_content_embeddings", {}).get("failed"),
                (lambda v: f"{v:.3f}" if isinstance(v, float) else None)(
                    md.get("pair_blip_scores", {}).get("paired_share_positive_more_similar")
                ),
                _ratio(md.get("content_encoder_evaluation", {}), "predicted_recall@50", "true_als_recall@50"),
                f"{collab.get('new_uploads_never_interacted_with_vector')}/{fresh}" if fresh is not None else None,
                None,  # the next day's evaluation fills it in
                _ratio(md.get("two_tower_evaluation", {}), "auc", "oracle_auc"),
                f"{len(checks) - len(bad)}/{len(checks)}",
                f"{time.time() - t:.1f}s",
            ]
        )
        if bad:
            print(f"{day}: failed checks: {', '.join(bad)}", file=sys.stderr)
    header = [
        "day",
        "run",
        "raw rows",
        "quarant.",
        "positive",
        "negative",
        "neutral",
        "clients dropped",
        "items",
        "pos pairs",
        "neg pairs",
        "ALS items",
        "ALS r@50",
        "pop r@50",
        "videos embedded",
        "media failed",
        "pos>neg sim",
        "cold r@50 pred/ALS",
        "unplayed uploads w/ vector",
        "their next-day r@50 pred/rand/oracle",
        "2T auc/oracle",
        "checks ok",
        "time",
    ]
    column = header.index("their next-day r@50 pred/rand/oracle")
    for r in rows:
        r[column] = new_eval.get(dt.date.fromisoformat(r[0]))
    table = [header] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print()
    for r in table:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths)))
    if args.job == "daily_job":
        report = defs.resolve_job_def("report_job").execute_in_process(
            instance=instance, run_config=run_config, raise_on_error=False, tags={HOST_TAG: socket.gethostname()}
        )
        for ev in report.get_asset_materialization_events():
            md = {k: getattr(v, "value", v) for k, v in ev.materialization.metadata.items()}
            print("\nexperiment_report (two-tower, train 7 days -> validate the next; baselines in the CSV):\n")
            print(md.get("results", ""))
            print(f"\nall methods: {md.get('csv')}")
        failed += 0 if report.success else 1
    io = defs.resources["io_manager"]
    print(
        f"\n{len(days)} day(s) in {time.time() - t0:.0f}s; outputs under {io.base_url}; "
        f"runs recorded in DAGSTER_HOME={home} (see them with `dagster dev -w workspace.yaml`)"
    )
    return 1 if failed else 0


def publish(args: argparse.Namespace, settings: Settings) -> int:
    """The simulated platform delivering days "live": each day's snapshot and then its ``_SUCCESS`` marker,
    one day every ``--every`` seconds, for ``snapshot_sensor`` to pick up (``--redeliver`` rewrites them)."""
    import time

    from .simulator.platform import get_platform
    from .simulator.publish import publish_day

    if settings.source != "simulator":
        print("publish: only the simulator publishes (RECSYS_SOURCE=simulator)", file=sys.stderr)
        return 2
    first, last = settings.default_range()
    start, end = args.start or first, args.end or last
    platform = get_platform(settings.sim_profile, settings.sim_seed)
    day = start
    while day <= end:
        path = publish_day(platform, settings.sim_root, day, redeliver=args.redeliver)
        print(f"published {day}: {path} + _SUCCESS", flush=True)
        day += dt.timedelta(days=1)
        if day <= end and args.every > 0:
            time.sleep(args.every)
    return 0


def main(argv: list[str] | None = None, env: typing.Mapping[str, str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="recsys-assets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("materialize", help="run a job for each day of a range and print a summary")
    m.add_argument("--start", type=dt.date.fromisoformat)
    m.add_argument("--end", type=dt.date.fromisoformat)
    m.add_argument("--job", default="daily_job")
    m.add_argument("--log-level", default="WARNING")
    p = sub.add_parser("publish", help="simulator: deliver days with _SUCCESS markers, for snapshot_sensor")
    p.add_argument("--start", type=dt.date.fromisoformat)
    p.add_argument("--end", type=dt.date.fromisoformat)
    p.add_argument("--every", type=float, default=0.0, help="seconds between days (0 = all at once)")
    p.add_argument("--redeliver", action="store_true", help="write the days again (a re-delivery)")
    args = ap.parse_args(argv)
    settings = Settings.from_env(os.environ if env is None else env)
    if args.cmd == "materialize":
        return materialize(args, settings)
    if args.cmd == "publish":
        return publish(args, settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
