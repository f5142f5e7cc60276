"""Statistics and check counts that Spark aggregates while it runs the job that writes a table.

``DataFrame.observe`` attaches named aggregates to a point of a plan; the action that runs the plan (the
write of the stage's output) computes them in the same pass, on the executors, and hands them to the driver
when it ends. A stage's statistics and its check verdicts therefore cost no scan of their own: the job that
writes the partition is the only job that reads its input. This works the same in a classic session and
through Spark Connect.

The metrics exist once an action has run the frame: :meth:`Observed.get` before that raises instead of
waiting (pyspark's ``Observation.get`` would block forever). No Dagster imports.
"""

from __future__ import annotations

import typing
import uuid


class NotYetObserved(RuntimeError):
    """The metrics were asked for before any action ran the frame they are attached to."""


class Observed:
    """Named groups of metrics attached to frames (:meth:`attach`), read after the frames ran (:meth:`get`)."""

    def __init__(self) -> None:
        self._observations: dict[str, typing.Any] = {}
        self._ran = False

    def attach(self, name: str, df, **metrics):
        """``df`` with ``metrics`` (name -> aggregate Column) counted as it flows past this point."""
        from pyspark.sql import Observation

        if name in self._observations:
            raise ValueError(f"metrics {name!r} are attached already")
        observation = Observation(f"{name}-{uuid.uuid4().hex[:8]}")
        self._observations[name] = observation
        return df.observe(observation, *[col.alias(k) for k, col in metrics.items()])

    def ran(self) -> None:
        """Record that an action ran every frame these metrics are attached to (a write, a collect)."""
        self._ran = True

    def get(self, name: str) -> dict[str, typing.Any]:
        if not self._ran:
            raise NotYetObserved(
                f"the {name!r} metrics are counted while the table is written: write it (or run it with "
                "run_observed) first"
            )
        return dict(self._observations[name].get)


def run_observed(df, observed: Observed) -> None:
    """Run ``df`` to the end without storing it (Spark's ``noop`` sink), so ``observed``'s metrics are counted."""
    df.write.format("noop").mode("overwrite").save()
    observed.ran()


def count_where(condition):
    """The number of rows where the boolean Column ``condition`` holds (an aggregate to observe or ``agg``)."""
    from pyspark.sql import functions as F

    return F.sum(condition.cast("long"))


def as_int(value: typing.Any) -> int:
    """A counted metric as an int (a sum over no rows is null)."""
    return int(value or 0)
