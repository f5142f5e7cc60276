"""The Spark engine of the data-preparation phases (seed 000 phases 1-3, the snapshot, the catalog).

Plain modules, no Dagster: each mirrors the polars stage of the same name in :mod:`recsys_assets.stages`, whose
rules, thresholds, reason codes, output schemas and check verdicts it imports -- the engines differ only in how
they execute. Data never passes through the driver: Spark reads the input files and writes each partition's
part files itself (:mod:`.io`); the driver sees counts and a few rows of metadata.
"""
