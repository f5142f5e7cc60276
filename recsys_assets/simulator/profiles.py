"""Named sizes of the simulated platform.

A profile fixes the size of the universe (clients, items, languages), how busy a day is,
and whether items get real mp4 media. Everything else about the platform follows from the
profile plus a seed, so ``(profile, seed, date)`` always yields the same day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

DEFAULT_LANGUAGES: tuple[tuple[str, float], ...] = (
    ("hindi", 0.55),
    ("tamil", 0.13),
    ("telugu", 0.12),
    ("bengali", 0.11),
    ("marathi", 0.09),
)


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    n_clients: int
    n_items_initial: int
    """Items uploaded before ``start_date`` (the back catalog)."""
    new_items_per_day: int
    """Items uploaded on each day from ``start_date`` on, for ``n_days`` days (cold start)."""
    n_days: int
    start_date: dt.date
    daily_active_share: float
    """Mean share of clients active on a day (each client has its own activity level)."""
    sessions_per_active_day: float
    """Mean sessions of an active client on a day (1 + Poisson)."""
    feed_size: float
    """Mean served items per session (3 + Poisson)."""
    dim: int = 16
    languages: tuple[tuple[str, float], ...] = DEFAULT_LANGUAGES
    bot_share: float = 0.03
    all_watched_session_share: float = 0.04
    media: bool = True
    media_seconds: float = 2.0
    media_size: int = 64
    media_fps: int = 8
    same_day_serve_share: float = 0.5
    """Share of each day's uploads the feed can serve on their upload day; the rest are served from the next
    day on (moderation and transcoding take time), so they end their first day with no interaction at all:
    the never-watched videos cold start is for."""

    @property
    def n_items(self) -> int:
        return self.n_items_initial + self.new_items_per_day * self.n_days

    @property
    def end_date(self) -> dt.date:
        """Last day of the profile's natural range (inclusive)."""
        return self.start_date + dt.timedelta(days=self.n_days - 1)

    def dates(self) -> list[dt.date]:
        return [self.start_date + dt.timedelta(days=i) for i in range(self.n_days)]


_START = dt.date(2026, 11, 1)

PROFILES: dict[str, Profile] = {
    # Unit and integration tests: seconds.
    "tiny": Profile(
        name="tiny",
        n_clients=300,
        n_items_initial=120,
        new_items_per_day=10,
        n_days=4,
        start_date=_START,
        daily_active_share=0.6,
        sessions_per_active_day=1.5,
        feed_size=8.0,
        media_seconds=1.0,
        media_size=32,
    ),
    # README command 1: the whole graph in minutes on 2 cores.
    "demo": Profile(
        name="demo",
        n_clients=4000,
        n_items_initial=1200,
        new_items_per_day=50,
        n_days=10,
        start_date=_START,
        daily_active_share=0.5,
        sessions_per_active_day=1.6,
        feed_size=9.0,
    ),
    # benchmarks/: >= 20 M interactions a day, >= 1 M clients, >= 500 k items, no media.
    "bench": Profile(
        name="bench",
        n_clients=1_300_000,
        n_items_initial=500_000,
        new_items_per_day=5_000,
        n_days=10,
        start_date=_START,
        daily_active_share=0.7,
        sessions_per_active_day=1.8,
        feed_size=13.0,
        media=False,
    ),
    # benchmarks/bench_scale.py: the seed's size for the content, cold-start and two-tower stages -- 5 lakh
    # active items, 2 M clients, >= 15 M interactions a day; no media: content vectors are generated from the
    # items' true content (simulator/content_vectors.py). "scale:0.25" is the same platform at a quarter size.
    "scale": Profile(
        name="scale",
        n_clients=2_000_000,
        n_items_initial=465_000,
        new_items_per_day=5_000,
        n_days=10,
        start_date=_START,
        daily_active_share=0.55,
        sessions_per_active_day=1.6,
        feed_size=10.0,
        media=False,
    ),
}


def get_profile(name: str) -> Profile:
    """A profile by name; ``name:fraction`` (e.g. ``scale:0.25``) scales its clients and items by the fraction
    (interactions follow), for measuring how a stage grows with size."""
    base, _, fraction = name.partition(":")
    try:
        profile = PROFILES[base]
    except KeyError:
        raise ValueError(f"unknown simulator profile {name!r}; known: {sorted(PROFILES)}") from None
    if not fraction:
        return profile
    try:
        f = float(fraction)
    except ValueError:
        raise ValueError(f"profile {name!r}: the fraction after ':' must be a number") from None
    if not 0 < f <= 64:
        raise ValueError(f"profile {name!r}: fraction must be in (0, 64]")
    return dataclasses.replace(
        profile,
        name=name,
        n_clients=max(50, round(profile.n_clients * f)),
        n_items_initial=max(50, round(profile.n_items_initial * f)),
        new_items_per_day=max(1, round(profile.new_items_per_day * f)),
    )
