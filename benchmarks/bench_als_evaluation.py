"""``als_evaluation`` on Spark beside polars, on the same synthetic factors and days: seconds and peak memory.

    .venv/bin/python benchmarks/bench_als_evaluation.py                     # 100k clients, 40k items, 2 languages
    .venv/bin/python benchmarks/bench_als_evaluation.py --clients 20000 --items 8000   # a quick run
    .venv/bin/python benchmarks/bench_als_evaluation.py --masters 'local[2],local[8]'  # on a larger machine

The inputs are random (seeded) factors and interactions in the layout the asset reads: ``item_factors`` /
``user_factors`` (id, language, float32 vector) and the window's and the next day's ``client_id, item_id,
is_positive``; each client is in one language's model, sees ``--seen`` items in the window and has ``--targets``
positives the next day. Each engine runs in a child process of its own: ``polars`` is
``stages.als_evaluation.evaluate`` (blocks of 2048 clients against every item of the language, in this
process); a Spark master runs ``spark.als_evaluation.evaluate`` (client blocks x item blocks on the executors).
Both tables are printed; they must be equal (up to the order of summation). Peak memory is the summed RSS of
the engine's process and its children (the JVM), sampled every 0.1 s.
"""

import argparse
import json
import time
from pathlib import Path

from _child import print_markdown, run_child
from bench_spark import TreePeak

HERE = Path(__file__).resolve().parent


def generate(root: Path, clients: int, items: int, factors: int, languages: int, seen: int, targets: int) -> None:
    import numpy as np
    import polars as pl

    if (root / "done").exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    langs = [f"lang{i}" for i in range(languages)]
    item_lang = np.arange(items) % languages
    client_lang = np.arange(clients) % languages
    vec = pl.Array(pl.Float32, factors)

    def factors_frame(name: str, n: int, lang: np.ndarray) -> pl.DataFrame:
        v = rng.standard_normal((n, factors), dtype=np.float32) * 0.3
        return pl.DataFrame({name: np.arange(n, dtype=np.int64), "language": np.array(langs)[lang]}).with_columns(
            pl.Series("vector", v).cast(vec)
        )

    factors_frame("item_id", items, item_lang).write_parquet(root / "item_factors.parquet")
    factors_frame("client_id", clients, client_lang).write_parquet(root / "user_factors.parquet")
    per_lang = {g: np.flatnonzero(item_lang == g) for g in range(languages)}

    def day(n_per_client: int, positive_share: float) -> pl.DataFrame:
        c = np.repeat(np.arange(clients, dtype=np.int64), n_per_client)
        pool = [per_lang[g] for g in client_lang[c]]
        i = np.fromiter((p[rng.integers(len(p))] for p in pool), dtype=np.int64, count=len(c))
        return pl.DataFrame({"client_id": c, "item_id": i, "is_positive": rng.random(len(c)) < positive_share})

    day(seen, 0.5).write_parquet(root / "train.parquet")
    day(targets, 1.0).write_parquet(root / "next_day.parquet")
    (root / "done").touch()


def run_engine(engine: str, root: Path) -> dict:
    import polars as pl

    if engine == "polars":
        from recsys_assets.stages.als_evaluation import evaluate

        frames = {
            n: pl.read_parquet(root / f"{n}.parquet") for n in ("item_factors", "user_factors", "train", "next_day")
        }
        with TreePeak() as peak:
            t = time.perf_counter()
            table, _ = evaluate(frames["item_factors"], frames["user_factors"], frames["train"], frames["next_day"])
            seconds = time.perf_counter() - t
        return {"seconds": seconds, "peak_gib": peak.peak / 2**30, "start_s": 0.0, "table": table.write_json()}
    from recsys_assets.spark.als_evaluation import evaluate
    from recsys_assets.spark.session import build_session, spark_config

    t = time.perf_counter()
    spark = build_session(spark_config(engine, conf={"spark.driver.memory": "6g"}))
    start = time.perf_counter() - t
    read = {
        n: spark.read.parquet(str(root / f"{n}.parquet")) for n in ("item_factors", "user_factors", "train", "next_day")
    }
    with TreePeak() as peak:
        t = time.perf_counter()
        table, _ = evaluate(read["item_factors"], read["user_factors"], read["train"], read["next_day"])
        seconds = time.perf_counter() - t
    spark.stop()
    return {"seconds": seconds, "peak_gib": peak.peak / 2**30, "start_s": start, "table": table.write_json()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=40_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--languages", type=int, default=2)
    ap.add_argument("--seen", type=int, default=30, help="window interactions per client")
    ap.add_argument("--targets", type=int, default=5, help="next-day positives per client")
    ap.add_argument("--masters", default="local[2]")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_engine(args.child, Path(args.root))))
        return
    import polars as pl

    shape = (args.clients, args.items, args.factors, args.languages, args.seen, args.targets)
    root = HERE / "_data" / ("als_eval_" + "_".join(map(str, shape)))
    generate(root, *shape)
    rows, tables = [], {}
    for engine in ["polars", *args.masters.split(",")]:
        res = run_child(__file__, ["--child", engine, "--root", str(root)], engine)
        tables[engine] = pl.read_json(res.pop("table").encode())
        rows.append(
            {
                "engine": engine,
                "start s": res["start_s"],
                "evaluate s": res["seconds"],
                "clients/s": tables[engine]["clients"].sum() / 2 / res["seconds"],
                "peak GiB": res["peak_gib"],
            }
        )
    print(f"clients {args.clients}, items {args.items}, factors {args.factors}, languages {args.languages}")
    print_markdown(rows)
    print(tables["polars"])
    for engine, table in tables.items():
        metrics = [c for c in table.columns if "@" in c]
        diff = max((table[m] - tables["polars"][m]).abs().max() or 0.0 for m in metrics)
        same = table.drop(metrics).equals(tables["polars"].drop(metrics))
        print(f"{engine}: same languages, methods and clients as polars: {same}; largest metric difference {diff:.2e}")


if __name__ == "__main__":
    main()
