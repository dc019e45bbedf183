"""Synthetic ad-conversion data: day files, Zipf request traffic, a drift day and a corrupt file.

The world it simulates: an ad is shown to a user; the row records who saw it and where
(``country``, ``device``, ``hour``, ``ad_category``, ``placement``, ``user_segment``: the table
key, 20 x 3 x 24 x 12 x 5 x 8 = 691,200 keys), the price paid (``bid``, numeric, not a key), and
whether it ``converted``. The label is drawn from a logistic model of all seven features, so a
model can learn it and a better model scores better.

Everything is seeded: the same seed and arguments write byte-identical files. Each day draws
from its own generator (seed, day), so asking for more days does not change the earlier ones.

- a **drift day** draws its rows from shifted distributions (other countries, more tablets,
  higher bids): the population stability index of those features is far above 0.25;
- the **corrupt file** is shaped like a day file but holds junk (text where integers and numbers
  belong, empty values, an unknown country), so validation must quarantine it;
- **traffic** is a JSON Lines file of request instances whose keys follow a Zipf law over the
  whole key space (a few keys are asked very often: the peakedness that makes a table pay).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shared.local.synth_keys import (
    AD_CATEGORIES,
    COUNTRIES,
    DEVICES,
    KEY,
    KEY_CARDINALITY,
    KEY_DOMAINS,
    PLACEMENTS,
    USER_SEGMENTS,
)
from shared.schema import Feature, Label, Schema
from shared.tables.codec import decode_codes

LABEL = "converted"
BID_MIN, BID_MAX, BID_DEFAULT = 0.05, 10.0, 1.0
ZIPF_EXPONENT = 1.1  # request traffic: the r-th most asked key gets a share ~ 1 / r**1.1

_EFFECTS_STREAM = 0xEFFEC7  # generator of the fixed world (effects, mixes), apart from day streams
_TRAFFIC_STREAM = 0x7AFF1C


def synth_schema() -> Schema:
    """The dataset contract of the synthetic data (what ``prodml schema infer`` should find)."""
    return Schema(
        features=(
            Feature("country", "category", domain=COUNTRIES),
            Feature("device", "category", domain=DEVICES),
            Feature("hour", "integer", min=0, max=23),
            Feature("ad_category", "category", domain=AD_CATEGORIES),
            Feature("placement", "category", domain=PLACEMENTS),
            Feature("user_segment", "category", domain=USER_SEGMENTS),
            Feature("bid", "float", min=BID_MIN, max=BID_MAX, default=BID_DEFAULT),
        ),
        label=Label(LABEL, "category", classes=(0, 1)),
        key=KEY,
    )


@dataclass(frozen=True)
class _World:
    """The fixed part of the simulation: how often each value occurs and what it does to the odds."""

    mix: dict[str, np.ndarray]  # feature -> probability of each value
    effect: dict[str, np.ndarray]  # feature -> log-odds added by each value
    intercept: float = -3.0
    bid_slope: float = 0.9  # log-odds per unit of log(bid): paying more buys better slots


def _world(seed: int) -> _World:
    rng = np.random.default_rng([seed, _EFFECTS_STREAM])
    values = {
        "country": COUNTRIES,
        "device": DEVICES,
        "ad_category": AD_CATEGORIES,
        "placement": PLACEMENTS,
        "user_segment": USER_SEGMENTS,
    }
    mix: dict[str, np.ndarray] = {}
    effect: dict[str, np.ndarray] = {}
    for name, domain in values.items():
        mix[name] = rng.dirichlet(np.full(len(domain), 2.0))
        effect[name] = rng.normal(0.0, 0.45, len(domain))
    # Countries: a long tail, as real ad traffic has (a few large markets, many small ones).
    weights = 1.0 / np.arange(1, len(COUNTRIES) + 1) ** 0.9
    mix["country"] = weights / weights.sum()
    # Hours: busy in the evening, quiet at night; conversions peak in the evening too.
    hours = np.arange(24)
    daily = 1.0 + 0.8 * np.sin(2 * np.pi * (hours - 14) / 24)
    mix["hour"] = daily / daily.sum()
    effect["hour"] = 0.5 * np.sin(2 * np.pi * (hours - 15) / 24)
    return _World(mix=mix, effect=effect)


def _drifted(world: _World) -> dict[str, np.ndarray]:
    """The mixes of a drift day: the market tail grows, tablets take over, the hours turn."""
    mix = dict(world.mix)
    mix["country"] = world.mix["country"][::-1].copy()
    mix["device"] = np.array([0.2, 0.2, 0.6])
    mix["hour"] = np.roll(world.mix["hour"], 12)
    return mix


def day_frame(seed: int, day: int, rows: int, drift: bool = False) -> pd.DataFrame:
    """The rows of day ``day`` (1-based): features and the ``converted`` label."""
    world = _world(seed)
    mix = _drifted(world) if drift else world.mix
    rng = np.random.default_rng([seed, day])
    columns: dict[str, np.ndarray] = {}
    logit = np.full(rows, world.intercept)
    for name, domain in KEY_DOMAINS:
        index = rng.choice(len(domain), size=rows, p=mix[name])
        columns[name] = np.asarray(domain, dtype=object if name != "hour" else np.int64)[index]
        logit += world.effect[name][index]
    bid_center = math.log(2.5) if drift else 0.0
    bid = np.clip(np.exp(rng.normal(bid_center, 0.5, rows)), BID_MIN, BID_MAX).round(2)
    logit += world.bid_slope * np.log(bid)
    converted = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame(columns)
    frame["bid"] = bid
    frame[LABEL] = converted
    return frame


def corrupt_frame(seed: int, rows: int) -> pd.DataFrame:
    """A day-shaped frame full of junk: text hours and bids, empty cells, an unknown country."""
    frame = day_frame(seed, 10_000, rows).astype(object)
    rng = np.random.default_rng([seed, 0xBAD])
    n = len(frame)
    for column, junk in (("hour", "noon"), ("bid", "n/a"), ("country", "atlantis"), ("device", "")):
        hit = rng.random(n) < 0.3
        frame.loc[hit, column] = junk
    return frame


def key_of(index: np.ndarray) -> dict[str, np.ndarray]:
    """Decode key numbers 0..KEY_CARDINALITY-1 into the key features' values (the table's codes)."""
    return decode_codes(synth_schema(), index)


def traffic_instances(seed: int, count: int, exponent: float = ZIPF_EXPONENT) -> list[dict[str, object]]:
    """``count`` request instances whose keys follow a Zipf law over the whole key space.

    Which keys are the popular ones is a seeded permutation of all keys, so the head is spread
    over every feature value rather than being the first keys in enumeration order.
    """
    rng = np.random.default_rng([seed, _TRAFFIC_STREAM])
    ranks = np.arange(1, KEY_CARDINALITY + 1, dtype=np.float64)
    cdf = np.cumsum(ranks**-exponent)
    cdf /= cdf[-1]
    rank = np.minimum(np.searchsorted(cdf, rng.random(count)), KEY_CARDINALITY - 1)
    keys = key_of(rng.permutation(KEY_CARDINALITY)[rank])
    bids = np.clip(np.exp(rng.normal(0.0, 0.5, count)), BID_MIN, BID_MAX).round(2)
    return [
        {
            **{name: (int(keys[name][i]) if name == "hour" else str(keys[name][i])) for name in KEY},
            "bid": float(bids[i]),
        }
        for i in range(count)
    ]


@dataclass
class SynthResult:
    """The files ``synthesize`` wrote."""

    out: Path
    day_files: list[Path] = field(default_factory=list)
    drift_file: Path | None = None
    corrupt_file: Path | None = None
    traffic_file: Path | None = None
    rows: dict[str, int] = field(default_factory=dict)  # file name -> rows

    @property
    def files(self) -> list[Path]:
        """Every file written, in the order a demo would drop them."""
        extra = [p for p in (self.corrupt_file, self.traffic_file) if p is not None]
        return [*self.day_files, *extra]


def synthesize(
    out: Path,
    *,
    days: int = 7,
    rows_per_day: int = 3000,
    seed: int = 0,
    drift_day: int | None = None,
    corrupt: bool = False,
    traffic: int = 0,
) -> SynthResult:
    """Write ``day-NN.csv`` for each day (day ``drift_day`` drifted), optionally ``corrupt.csv``
    and ``traffic.jsonl`` (``traffic`` instances) into ``out``; return what was written."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if rows_per_day < 1:
        raise ValueError(f"rows_per_day must be at least 1, got {rows_per_day}")
    if drift_day is not None and not 1 <= drift_day <= days:
        raise ValueError(f"drift_day must be a day from 1 to {days}, got {drift_day}")
    if traffic < 0:
        raise ValueError(f"traffic must be 0 or more instances, got {traffic}")
    out.mkdir(parents=True, exist_ok=True)
    result = SynthResult(out=out)
    width = max(2, len(str(days)))
    for day in range(1, days + 1):
        path = out / f"day-{day:0{width}d}.csv"
        frame = day_frame(seed, day, rows_per_day, drift=day == drift_day)
        frame.to_csv(path, index=False)
        result.day_files.append(path)
        result.rows[path.name] = len(frame)
        if day == drift_day:
            result.drift_file = path
    if corrupt:
        path = out / "corrupt.csv"
        frame = corrupt_frame(seed, max(50, rows_per_day // 10))
        frame.to_csv(path, index=False)
        result.corrupt_file = path
        result.rows[path.name] = len(frame)
    if traffic:
        path = out / "traffic.jsonl"
        with open(path, "w") as f:
            for instance in traffic_instances(seed, traffic):
                f.write(json.dumps(instance) + "\n")
        result.traffic_file = path
        result.rows[path.name] = traffic
    return result
