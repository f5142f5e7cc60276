"""Readers of the platform's raw data: daily interaction snapshots (parquet) and the video catalog (Delta)."""
