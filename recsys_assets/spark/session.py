"""How the Spark engine gets its session, and how storage URLs become Spark paths (no Dagster here).

* ``master`` (``local[*]`` by default; a ``spark://``, ``yarn`` or ``k8s://`` master on a cluster) or
  ``remote`` (``sc://host:port``: Spark Connect -- Databricks, EMR, a self-run Connect server). With ``remote``
  the session is a Connect client and ``master`` is the server's business.
* ``conf``: extra ``key=value`` settings (``RECSYS_SPARK_CONF``, comma or newline separated). MLlib ALS needs
  ``spark.checkpoint.dir`` (shared storage on a cluster; a local session gets a temporary folder).
* ``scheme_map``: how the project's storage URLs are written for Spark's filesystem -- ``s3://`` (what the
  project, boto3 and polars use) to ``s3a://`` (Hadoop's S3A) by default; ``s3=s3`` on EMR, whose EMRFS
  serves ``s3://`` itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import typing
from pathlib import Path
from urllib.parse import urlparse

BASE_CONF: dict[str, str] = {
    # every timestamp is UTC: partition days, day bounds and epoch conversions must not depend on a host's zone
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    # checkpoint files (MLlib ALS's) are deleted once their data is no longer referenced
    "spark.cleaner.referenceTracking.cleanCheckpoints": "true",
    # an aggregate over input already sorted by its keys streams over it instead of hashing it (the pair count
    # sorts its keys first: the sort then orders the output and counts; spark.item_pairs.PairKey)
    "spark.sql.execution.replaceHashWithSortAgg": "true",
}
LOCAL_CONF: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    # a local session's executors are its driver JVM: the throughput collector suits batch stages there (phase 1 + 3
    # of the bench day on local[2]: 84.1 s vs 89.6 s with Java 17's default G1, means of 3 runs; benchmarks/README)
    "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
}


TASKS_PER_CORE = 4
"""A local session splits its work into this many tasks per core (``local_parallelism``)."""


def local_cores(master: str) -> typing.Optional[int]:
    """The cores of a ``local``, ``local[N]``, ``local[N,F]`` or ``local[*]`` master (``*``: the cores this
    process may run on); None for any other master."""
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if not m:
        return None
    if m.group(1) in (None, ""):
        return 1
    if m.group(1) == "*":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(int(m.group(1)), 1)


def local_parallelism(cores: int) -> dict[str, str]:
    """Task counts for a local session of ``cores``: ``TASKS_PER_CORE`` tasks per core for file scans
    (``spark.default.parallelism`` sets how many splits the files are cut into) and shuffles, so that every
    core stays busy to the end of a stage. Spark's defaults size both for a cluster: the day's 8 snapshot parts
    became 3 scan tasks on 2 cores, and adaptive execution coalesced the pairs' shuffle into 7 tasks (the
    coalescing aims at ``spark.default.parallelism`` partitions at least); ``benchmarks/README.md`` has the
    figures."""
    n = str(TASKS_PER_CORE * cores)
    return {"spark.default.parallelism": n, "spark.sql.shuffle.partitions": n}


def parse_conf(text: typing.Optional[str]) -> dict[str, str]:
    """``"a=1,b=2"`` (or one ``key=value`` per line) -> ``{"a": "1", "b": "2"}``; a malformed item fails
    naming it."""
    out: dict[str, str] = {}
    for item in (text or "").replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Spark setting {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def parse_scheme_map(text: typing.Optional[str]) -> dict[str, str]:
    """``"s3=s3a"`` -> ``{"s3": "s3a"}``: storage scheme -> the scheme Spark's filesystem serves it under."""
    out = parse_conf(text)
    for k, v in out.items():
        if not (k.isalnum() and v.isalnum()):
            raise ValueError(f"scheme mapping {k}={v}: schemes are letters and digits only")
    return out


def spark_config(
    master: str = "local[*]", remote: typing.Optional[str] = None, conf: typing.Mapping[str, str] = ()
) -> dict[str, str]:
    """The session's settings: ``spark.remote`` for Spark Connect, else ``spark.master``; ``conf`` wins."""
    out = dict(BASE_CONF)
    if remote:
        if urlparse(remote).scheme != "sc":
            raise ValueError(f"a Spark Connect address is sc://host:port, not {remote!r}")
        out["spark.remote"] = remote
    else:
        out["spark.master"] = master
        if master.startswith("local"):
            out.update(LOCAL_CONF)
            cores = local_cores(master)
            if cores:
                out.update(local_parallelism(cores))
            # a cluster's checkpoint directory must be shared storage (spark.checkpoint.dir in the deployment's conf);
            # a local session's may be the machine's temporary folder (Spark makes a folder per application in it)
            out["spark.checkpoint.dir"] = str(Path(tempfile.gettempdir()) / "recsys-spark-checkpoints")
    out.update(dict(conf))
    return out


def spark_path(url: str, scheme_map: typing.Mapping[str, str]) -> str:
    """A storage URL (a local path, ``file://`` or ``s3://``) as Spark opens it."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:
        path = parsed.path if parsed.scheme == "file" else url
        return "file://" + str(Path(path).resolve())
    scheme = scheme_map.get(parsed.scheme, parsed.scheme)
    return f"{scheme}://{url.split('://', 1)[1]}"


def java_version() -> typing.Optional[str]:
    """The JVM Spark would start (``$JAVA_HOME/bin/java`` or ``java`` on PATH) as its version line; None if
    there is none."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    lines = (out.stderr or out.stdout).strip().splitlines()
    return lines[0] if lines else None


JAVA_HINT = (
    "The Spark engine needs a Java 17 or 21 runtime (Spark 4.x): on Debian/Ubuntu "
    "`apt-get install -y openjdk-17-jre-headless`, or set JAVA_HOME. The polars engine (RECSYS_ENGINE=polars, "
    "the default) needs no Java."
)


def prepare_mode(config: typing.Mapping[str, str]) -> None:
    """Check what the session ``config`` asks for can start, before pyspark builds it.

    A classic session (no ``spark.remote``) needs a JVM: without one this raises :data:`JAVA_HINT` instead of
    pyspark's gateway error. pyspark marks the whole process as Spark Connect
    (``SPARK_CONNECT_MODE_ENABLED``) once a Connect session was made in it, and from then on refuses classic
    sessions ("remote URL has not been set"); a classic config clears that mark, since it states the mode."""
    if "spark.remote" in config:
        return
    if java_version() is None:
        raise RuntimeError(JAVA_HINT)
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
    if str(config.get("spark.master", "")).startswith("local"):
        # local Python workers (the evaluation's arrow functions) run this interpreter, whose environment has
        # the package (pyspark's default is whatever ``python3`` is on PATH); a cluster's workers use their
        # image's (PYSPARK_PYTHON there)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def build_session(config: typing.Mapping[str, str]):
    """A SparkSession (classic or Connect) from :func:`spark_config`'s settings -- the same way
    ``dagster_pyspark``'s resources build theirs."""
    from pyspark.sql import SparkSession

    prepare_mode(config)
    builder = SparkSession.builder
    for k, v in config.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()
