"""Progress lines for long loops: items done, rate and ETA, every N seconds or items (no Dagster import; the
assets pass ``context.log.info`` as ``log``)."""

import time
import typing


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """``update(n)`` after each unit of work; a line is logged when ``every_s`` seconds or ``every_n`` items have
    passed since the last one, and by ``finish()``::

        embedding: 1,280/50,000 items (2.6%), 42.1 items/s, ETA 19m18s
    """

    def __init__(
        self,
        log: typing.Callable[[str], None],
        what: str,
        total: int,
        unit: str = "items",
        every_s: float = 30.0,
        every_n: typing.Optional[int] = None,
        clock: typing.Callable[[], float] = time.monotonic,
    ):
        self.log, self.what, self.total, self.unit = log, what, total, unit
        self.every_s, self.every_n, self.clock = every_s, every_n, clock
        self.done = 0
        self.t0 = self.clock()
        self._last_t, self._last_n = self.t0, 0

    def line(self) -> str:
        elapsed = self.clock() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
        left = self.total - self.done
        eta = f", ETA {_duration(left / rate)}" if rate > 0 and left > 0 else ""
        return f"{self.what}: {self.done:,}/{self.total:,} {self.unit}{pct}, {rate:,.1f} {self.unit}/s{eta}"

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        due_time = now - self._last_t >= self.every_s
        due_items = self.every_n is not None and self.done - self._last_n >= self.every_n
        if (due_time or due_items) and self.done < self.total:
            self.log(self.line())
            self._last_t, self._last_n = now, self.done

    def finish(self) -> None:
        self.log(self.line() + f" -- done in {_duration(self.clock() - self.t0)}")
