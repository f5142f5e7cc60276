"""A simulated Josh-like short-video platform with planted structure.

Pure numpy/polars; no Dagster. Deterministic: the universe comes from ``seed`` alone and a
day from ``(seed, date)``, so days can be generated in any order and always come out the same.

Model
-----
* Clients ``c`` have a taste vector ``u_c ~ N(0, I)``, a bias, a language, an activity level
  and a bot flag. Items ``i`` have a content vector ``v_i ~ N(0, I/d)``, a quality, a language,
  a heavy-tailed popularity, a duration and an upload date (new items arrive every day).
* Affinity ``a(c, i) = 1.5 * u_c . v_i + q_i + b_c - 0.2`` (the truth). On a served item the
  client draws ``z = a + eps`` with ``eps ~ N(0, 1)``; completion ``pcc`` is an increasing
  function of ``z`` that exceeds 1 for loops; ``timespent = pcc * duration``; a like is an
  independent draw with probability ``like_probability(a)``.
* So ``P(positive) = 1 - P(pcc <= 0.9) * (1 - p_like)`` has a closed form: see
  :meth:`Platform.positive_probability`. Bots complete and like nearly everything; a few
  sessions have every served video fully watched. Feeds are biased to popular and fresh items
  and personalised: each slot serves the best of 3 popularity-drawn candidates by affinity plus
  Gumbel noise (the incumbent recommender), so what a client sees already reflects its taste.
* A share of each day's uploads is served only from the next day on (``same_day_serve_share``), so
  those videos end their upload day with no interaction: the cold start of seed 000.
* Every item has a real mp4 rendered from ``v_i`` (see :mod:`.media`), so content predicts
  behaviour.
* A small share of rows is dirty on purpose (null ids, NaN/negative values, duplicates), as
  real snapshots are; the pipeline must quarantine them.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import ndtr

from .profiles import Profile, get_profile

CLIENT_ID_OFFSET = 100_000_000
ITEM_ID_OFFSET = 500_000_000

TASTE_SCALE = 1.5
AFFINITY_SHIFT = -1.3
NOISE_SD = 1.0
PCC_SCALE = 1.3
PCC_SLOPE = 1.2
LOOP_START = 2.0
LOOP_GAIN = 0.4
LIKE_CENTER = 1.5
LIKE_SLOPE = 2.0
LIKE_MAX = 0.8
OWN_LANGUAGE_SHARE = 0.9
DIRTY_SHARE = 0.001
SERVE_CANDIDATES = 3
SERVE_NOISE = 1.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def pcc_from_z(z: np.ndarray) -> np.ndarray:
    """Completion as an increasing function of the latent response (loops above ``LOOP_START``)."""
    return PCC_SCALE * _sigmoid(PCC_SLOPE * z) + LOOP_GAIN * np.logaddexp(0.0, z - LOOP_START)


def z_for_pcc(pcc: float) -> float:
    """Inverse of :func:`pcc_from_z` (bisection; it is strictly increasing)."""
    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if pcc_from_z(np.array(mid)) > pcc:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def like_probability(affinity: np.ndarray) -> np.ndarray:
    return LIKE_MAX * _sigmoid(LIKE_SLOPE * (affinity - LIKE_CENTER))


class Platform:
    """The simulated platform: a universe of clients and items, days of interactions, the truth."""

    def __init__(self, profile: Profile | str = "demo", seed: int = 7):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.seed = int(seed)
        p = self.profile
        rng = np.random.default_rng([self.seed, 0])
        d = p.dim
        names = [name for name, _ in p.languages]
        shares = np.array([s for _, s in p.languages], dtype=np.float64)
        shares /= shares.sum()
        self.languages: list[str] = names
        self.language_shares = shares

        # clients
        self.client_taste = rng.standard_normal((p.n_clients, d), dtype=np.float32)
        self.client_bias = (0.3 * rng.standard_normal(p.n_clients)).astype(np.float32)
        self.client_language = rng.choice(len(names), size=p.n_clients, p=shares).astype(np.int16)
        a = 2.0
        b = a * (1 - p.daily_active_share) / p.daily_active_share
        self.client_activity = rng.beta(a, b, size=p.n_clients).astype(np.float32)
        self.client_is_bot = rng.random(p.n_clients) < p.bot_share

        # items
        n = p.n_items
        self.item_content = (rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
        self.item_quality = (0.4 * rng.standard_normal(n)).astype(np.float32)
        self.item_language = rng.choice(len(names), size=n, p=shares).astype(np.int16)
        self.item_popularity = (rng.pareto(1.2, size=n) + 1.0).astype(np.float64)
        self.item_duration = np.clip(rng.lognormal(np.log(20.0), 0.6, size=n), 3.0, 180.0).round(2)
        upload = np.empty(n, dtype=np.int32)  # days relative to start_date
        upload[: p.n_items_initial] = -rng.integers(1, 366, size=p.n_items_initial)
        upload[p.n_items_initial :] = np.repeat(np.arange(p.n_days, dtype=np.int32), p.new_items_per_day)
        self.item_upload_offset = upload
        self.item_creator = rng.integers(0, max(1, n // 8), size=n) + 900_000_000
        # day from which the feed may serve an item: the upload day, or the next for the uploads still in
        # processing at the end of their day (an independent stream, so the rest of the universe is unchanged)
        late = np.random.default_rng([self.seed, 1]).random(n) >= p.same_day_serve_share
        late[: p.n_items_initial] = False
        self.item_serve_offset = (upload + late).astype(np.int32)

    # ---- ids -------------------------------------------------------------------------------
    @property
    def client_ids(self) -> np.ndarray:
        return np.arange(self.profile.n_clients, dtype=np.int64) + CLIENT_ID_OFFSET

    @property
    def item_ids(self) -> np.ndarray:
        return np.arange(self.profile.n_items, dtype=np.int64) + ITEM_ID_OFFSET

    def _client_index(self, client_ids) -> np.ndarray:
        idx = np.asarray(client_ids, dtype=np.int64) - CLIENT_ID_OFFSET
        if idx.size and (idx.min() < 0 or idx.max() >= self.profile.n_clients):
            raise KeyError("client id outside the simulated universe")
        return idx

    def _item_index(self, item_ids) -> np.ndarray:
        idx = np.asarray(item_ids, dtype=np.int64) - ITEM_ID_OFFSET
        if idx.size and (idx.min() < 0 or idx.max() >= self.profile.n_items):
            raise KeyError("item id outside the simulated universe")
        return idx

    # ---- truth -----------------------------------------------------------------------------
    def _affinity_idx(self, ci: np.ndarray, ii: np.ndarray, chunk: int = 2_000_000) -> np.ndarray:
        out = np.empty(len(ci), dtype=np.float32)
        for s in range(0, len(ci), chunk):
            c, i = ci[s : s + chunk], ii[s : s + chunk]
            dot = np.einsum("nd,nd->n", self.client_taste[c], self.item_content[i])
            out[s : s + chunk] = TASTE_SCALE * dot + self.item_quality[i] + self.client_bias[c] + AFFINITY_SHIFT
        return out

    def true_affinity(self, client_ids, item_ids) -> np.ndarray:
        """The noiseless affinity ``a(c, i)`` for aligned arrays of ids."""
        return self._affinity_idx(self._client_index(client_ids), self._item_index(item_ids))

    def true_item_content(self, item_ids) -> np.ndarray:
        """The content vectors the affinity is built from (what a perfect content encoder would recover)."""
        return self.item_content[self._item_index(item_ids)]

    def affinity_matrix(self, client_ids, item_ids) -> np.ndarray:
        """``a(c, i)`` for every client (rows) x item (columns)."""
        ci, ii = self._client_index(client_ids), self._item_index(item_ids)
        dot = self.client_taste[ci] @ self.item_content[ii].T
        return TASTE_SCALE * dot + self.item_quality[ii][None, :] + self.client_bias[ci][:, None] + AFFINITY_SHIFT

    def positive_probability(self, client_ids, item_ids, pcc_threshold: float = 0.9) -> np.ndarray:
        """P(pcc > threshold or liked) for an ordinary (non-bot) client in an ordinary session."""
        a = self.true_affinity(client_ids, item_ids).astype(np.float64)
        return positive_probability_from_affinity(a, pcc_threshold)

    def is_bot(self, client_ids) -> np.ndarray:
        return self.client_is_bot[self._client_index(client_ids)]

    def item_language_names(self, item_ids) -> np.ndarray:
        return np.array(self.languages, dtype=object)[self.item_language[self._item_index(item_ids)]]

    # ---- catalog ---------------------------------------------------------------------------
    def catalog(self, media_root: str | os.PathLike | None = None) -> pl.DataFrame:
        """Every item of the universe with its metadata; ``download_url`` points into ``media_root``."""
        p = self.profile
        ids = self.item_ids
        if media_root is None:
            urls = [None] * len(ids)
        else:
            base = Path(media_root).resolve().as_uri()
            urls = [f"{base}/{i}.mp4" for i in ids]
        start = np.datetime64(p.start_date, "D")
        return pl.DataFrame(
            {
                "item_id": ids,
                "language": pl.Series(self.languages, dtype=pl.String).gather(self.item_language.astype(np.int64)),
                "duration_s": self.item_duration.astype(np.float64),
                "upload_date": (start + self.item_upload_offset.astype("timedelta64[D]")),
                "creator_id": self.item_creator.astype(np.int64),
                "download_url": pl.Series(urls, dtype=pl.String),
                "width": np.full(len(ids), p.media_size, dtype=np.int32),
                "height": np.full(len(ids), p.media_size, dtype=np.int32),
            }
        ).with_columns(pl.col("upload_date").cast(pl.Date))

    def media_jobs(self, media_root: str | os.PathLike) -> list[tuple]:
        p = self.profile
        root = Path(media_root)
        return [
            (str(root / f"{iid}.mp4"), self.item_content[k], p.media_seconds, p.media_size, p.media_fps)
            for k, iid in enumerate(self.item_ids)
        ]

    # ---- a day -----------------------------------------------------------------------------
    def day_offset(self, day: dt.date) -> int:
        return (day - self.profile.start_date).days

    def interactions(self, day: dt.date | str, *, dirty: bool = True) -> pl.DataFrame:
        """The daily snapshot: one row per served item (client, session, item, ts, timespent, pcc, liked)."""
        if isinstance(day, str):
            day = dt.date.fromisoformat(day)
        p = self.profile
        rng = np.random.default_rng([self.seed, day.toordinal()])
        off = self.day_offset(day)

        active = np.flatnonzero(rng.random(p.n_clients) < self.client_activity)
        n_sess = 1 + rng.poisson(max(p.sessions_per_active_day - 1.0, 0.0), size=len(active))
        sess_client = np.repeat(active, n_sess)
        sess_no = np.arange(len(sess_client)) - np.repeat(np.cumsum(n_sess) - n_sess, n_sess)
        feed = 3 + rng.poisson(max(p.feed_size - 3.0, 0.0), size=len(sess_client))
        all_watched = rng.random(len(sess_client)) < p.all_watched_session_share
        sess_start = rng.integers(0, 86_400 - 3_600, size=len(sess_client))

        row_sess = np.repeat(np.arange(len(sess_client)), feed)
        ci = sess_client[row_sess]
        n = len(ci)

        # the incumbent recommender: each slot draws SERVE_CANDIDATES items from a language pool with
        # popularity/freshness-biased probability and serves the one it scores best -- the true
        # affinity plus Gumbel noise -- so exposure is personalised, as on a real feed.
        k = SERVE_CANDIDATES
        cc = np.repeat(ci, k)
        own = rng.random(n * k) < OWN_LANGUAGE_SHARE
        other = rng.choice(len(self.languages), size=n * k, p=self.language_shares).astype(np.int16)
        slot_lang = np.where(own, self.client_language[cc], other)
        available = self.item_serve_offset <= off
        age = np.maximum(off - self.item_upload_offset, 0)
        weight = self.item_popularity * (1.0 + 4.0 * np.exp(-age / 2.0))
        cand = np.empty(n * k, dtype=np.int64)
        for lang in range(len(self.languages)):
            slots = np.flatnonzero(slot_lang == lang)
            pool = np.flatnonzero(available & (self.item_language == lang))
            if len(slots) == 0:
                continue
            if len(pool) == 0:
                pool = np.flatnonzero(available)
            cum = np.cumsum(weight[pool])
            pick = np.searchsorted(cum, rng.random(len(slots)) * cum[-1], side="right")
            cand[slots] = pool[np.minimum(pick, len(pool) - 1)]
        serve_score = self._affinity_idx(cc, cand) + SERVE_NOISE * rng.gumbel(size=n * k).astype(np.float32)
        best = serve_score.reshape(n, k).argmax(axis=1)
        ii = cand.reshape(n, k)[np.arange(n), best]

        a = self._affinity_idx(ci, ii)
        z = a + NOISE_SD * rng.standard_normal(n, dtype=np.float32)
        pcc = pcc_from_z(z.astype(np.float64))
        liked = rng.random(n) < like_probability(a.astype(np.float64))
        special = all_watched[row_sess] | self.client_is_bot[ci]
        if special.any():
            k = int(special.sum())
            pcc[special] = rng.uniform(0.95, 1.8, size=k)
            liked[special] = liked[special] | (rng.random(k) < 0.5)
        duration = self.item_duration[ii]
        timespent = np.round(pcc * duration, 3)

        # timestamps: session start + time spent on the earlier items of the session (+1 s gaps)
        csum = np.cumsum(timespent + 1.0)
        first = np.cumsum(feed) - feed
        before = csum - (timespent + 1.0) - np.repeat(np.where(first > 0, csum[first - 1], 0.0), feed)
        midnight = np.datetime64(day, "us").astype(np.int64)
        ts = midnight + (sess_start[row_sess] * 1_000_000 + (before * 1_000_000).astype(np.int64))

        session_id = (day.toordinal() % 100_000) * 10**11 + ci * 100 + sess_no[row_sess]
        df = pl.DataFrame(
            {
                "client_id": ci + CLIENT_ID_OFFSET,
                "session_id": session_id.astype(np.int64),
                "item_id": ii + ITEM_ID_OFFSET,
                "event_ts": pl.Series(ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                "timespent_s": timespent,
                "pcc": np.round(pcc, 4),
                "liked": liked,
            }
        )
        if dirty and n >= 1000:
            df = _make_dirty(df, rng)
        return df


def positive_probability_from_affinity(a: np.ndarray, pcc_threshold: float = 0.9) -> np.ndarray:
    z0 = z_for_pcc(pcc_threshold)
    p_not_complete = ndtr((z0 - a) / NOISE_SD)
    return 1.0 - p_not_complete * (1.0 - like_probability(a))


def _make_dirty(df: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """Corrupt a small share of rows the way real snapshots are corrupt, and duplicate a few."""
    n = df.height
    k = max(1, int(n * DIRTY_SHARE))
    rows = rng.choice(n, size=4 * k, replace=False)
    null_client, nan_pcc, neg_time, null_item = np.split(rows, 4)
    idx = pl.Series(np.arange(n))
    df = df.with_columns(
        pl.when(idx.is_in(null_client)).then(None).otherwise(pl.col("client_id")).alias("client_id"),
        pl.when(idx.is_in(null_item)).then(None).otherwise(pl.col("item_id")).alias("item_id"),
        pl.when(idx.is_in(nan_pcc)).then(float("nan")).otherwise(pl.col("pcc")).alias("pcc"),
        pl.when(idx.is_in(neg_time))
        .then(-pl.col("timespent_s") - 1)
        .otherwise(pl.col("timespent_s"))
        .alias("timespent_s"),
    )
    dup = df[np.sort(rng.choice(n, size=k, replace=False))]
    return pl.concat([df, dup])


@functools.lru_cache(maxsize=4)
def get_platform(profile: str, seed: int) -> Platform:
    """A process-wide cache: building a bench universe takes seconds."""
    return Platform(profile, seed)
