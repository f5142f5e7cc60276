"""Shortens the backfill daemon's pause in the tests that run ``dagster dev`` for real.

Dagster's backfill daemon sleeps a fixed 30 s between iterations (``DEFAULT_DAEMON_INTERVAL_SECONDS``, read by
``execute_backfill_iteration_loop``; no setting or environment variable changes it). A backfill of a windowed
graph moves one hop per iteration, so a 3-day whole-graph backfill spent most of its ~6.5 minutes asleep.

``conftest.run_dagster_dev`` puts this folder on ``PYTHONPATH`` and sets ``RECSYS_TEST_DAEMON_INTERVAL_S``.
Python imports ``sitecustomize`` at start-up in every process of that ``dagster dev``; this one acts only in the
daemon process (``python -m dagster._daemon run ...``, as ``dagster dev`` starts it) and there only sets that
interval. The webserver, code server, daemon threads, run queue and runs are Dagster's, unchanged."""

import os
import sys

_interval = os.environ.get("RECSYS_TEST_DAEMON_INTERVAL_S")
if _interval and sys.orig_argv[1:3] == ["-m", "dagster._daemon"]:
    from dagster._daemon import controller

    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = float(_interval)
