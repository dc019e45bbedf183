"""The key space of the synthetic dataset (``shared.local.synth``): its key features, each with
its values, and the number of keys they make.

Kept apart from the generator, with no import beyond the standard library, so ``prodml data
synth --help`` can state the number of keys without loading numpy or pandas.
"""

from __future__ import annotations

import math
from typing import Any

COUNTRIES = (
    "us", "in", "br", "id", "jp", "de", "gb", "fr", "mx", "kr",
    "it", "es", "ca", "tr", "ng", "vn", "ph", "pl", "ar", "au",
)  # fmt: skip
DEVICES = ("mobile", "desktop", "tablet")
HOURS = tuple(range(24))
AD_CATEGORIES = (
    "apparel", "auto", "beauty", "books", "electronics", "finance",
    "food", "games", "home", "sports", "toys", "travel",
)  # fmt: skip
PLACEMENTS = ("feed", "search", "sidebar", "video", "banner")
USER_SEGMENTS = ("new", "casual", "loyal", "lapsed", "bargain", "premium", "student", "family")

# The key features in key order, each with its values.
KEY_DOMAINS: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("country", COUNTRIES),
    ("device", DEVICES),
    ("hour", HOURS),
    ("ad_category", AD_CATEGORIES),
    ("placement", PLACEMENTS),
    ("user_segment", USER_SEGMENTS),
)
KEY = tuple(name for name, _ in KEY_DOMAINS)
KEY_CARDINALITY = math.prod(len(domain) for _, domain in KEY_DOMAINS)
