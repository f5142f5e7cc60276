"""The skeleton every next-day evaluation shares: the model(s) of D-1 scored on day D.

:func:`evaluation_asset` declares one: a single-output ``multi_asset`` with ``can_subset`` so that its checks
are optional outputs -- an evaluation with nothing to evaluate yields its (empty, ``skipped``) table and no
check results, which the UI shows as *skipped*, not passed.

An evaluation asset of partition D reads its models through ``PREVIOUS_DAY`` and its data through
``EVAL_WINDOW`` (D-7 .. D). :func:`next_day_inputs` unwraps those inputs, or -- on the first partition,
where no model of D-1 exists -- returns the outputs that record the evaluation as skipped, with the
reason, so each asset handles that case the same way.
"""

import dataclasses
import datetime as dt
import inspect
import typing

import dagster as dg
import polars as pl

from ..storage import TableRef
from .checks import CheckSet
from .partitions import partition_date


def evaluation_asset(**kwargs: typing.Any) -> typing.Callable[[typing.Callable], dg.AssetsDefinition]:
    """``@dg.asset(**kwargs)`` for an evaluation (see module docstring); outputs are named after the asset."""

    def decorate(fn: typing.Callable) -> dg.AssetsDefinition:
        name = fn.__name__
        out = dg.AssetOut(is_required=True, description=inspect.getdoc(fn))
        return dg.multi_asset(name=name, outs={name: out}, can_subset=True, **kwargs)(fn)

    return decorate


@dataclasses.dataclass(frozen=True)
class NextDay:
    day: dt.date
    models: dict[str, typing.Any]
    """Each ``PREVIOUS_DAY`` input, unwrapped to its one value."""
    model_partition: str
    today: typing.Any
    """Day D of the ``EVAL_WINDOW`` input (a polars frame, or a :class:`~recsys_assets.storage.TableRef`)."""
    history: typing.Any
    """The days before D of the ``EVAL_WINDOW`` input, concatenated in day order (a frame; or one
    :class:`~recsys_assets.storage.TableRef` of all those partitions, with no key when there is none)."""


def next_day_inputs(
    context: dg.AssetExecutionContext,
    checks: CheckSet,
    empty_schema: typing.Mapping[str, pl.DataType],
    window: typing.Mapping[str, typing.Any],
    **models: typing.Mapping[str, typing.Any],
) -> tuple[typing.Optional[NextDay], list]:
    """``(NextDay, [])`` when every model of D-1 is there; ``(None, outputs)`` to yield when it is not."""
    day = partition_date(context)
    previous = (day - dt.timedelta(days=1)).isoformat()
    missing = [name for name, value in models.items() if not value]
    if missing:
        reason = f"no {' / '.join(missing)} partition for {previous} (the first partition has no model before it)"
        context.log.warning(f"{context.asset_key.to_user_string()} {day}: skipped, {reason}")
        return None, [
            dg.Output(
                pl.DataFrame(schema=dict(empty_schema)),
                output_name=checks.asset.path[-1],
                metadata={"skipped": reason},
            )
        ]
    if day.isoformat() not in window:
        raise dg.Failure(
            f"{context.asset_key.to_user_string()} {day}: the day to evaluate on has no data "
            f"(its input window holds {', '.join(sorted(window)) or 'no day'}); materialize {day} upstream first",
            allow_retries=False,
        )
    today = window[day.isoformat()]
    earlier = [value for key, value in sorted(window.items()) if key != day.isoformat()]
    if isinstance(today, TableRef):
        history = dataclasses.replace(today, keys=tuple(k for ref in earlier for k in ref.keys))
    else:
        history = pl.concat(earlier, how="vertical_relaxed") if earlier else today.clear()
    unwrapped = {name: next(iter(value.values())) for name, value in models.items()}
    return NextDay(day, unwrapped, previous, today, history), []
