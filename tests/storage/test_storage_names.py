"""Name rules that are not tied to one backend's behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import InvalidObjectName
from shared.storage.local import LocalBucket
from shared.storage.names import MAX_NAME_BYTES, check_local_object_name, check_object_name, derived_name


@pytest.mark.parametrize("name", ["../data", "/abs", "ab", "Upper-Case", ".meta", "a/b", "x" * 64, "-dash"])
def test_bad_bucket_names_are_refused_before_touching_disk(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidObjectName, match="invalid bucket name"):
        LocalBucket(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_gcs_rules_allow_what_only_a_filesystem_forbids() -> None:
    # GCS object names are flat strings: these are fine there, refused only by the local backend.
    for name in ["/leading", "a//b", "trailing/", "a/../b", "./x"]:
        assert check_object_name(name) == name
        with pytest.raises(InvalidObjectName):
            check_local_object_name(name)


def test_non_strings_are_refused() -> None:
    with pytest.raises(InvalidObjectName, match="must be a str, not bytes"):
        check_object_name(b"a.csv")


def test_a_derived_name_keeps_short_names_and_bounds_long_ones_uniquely() -> None:
    assert derived_name("monitoring/", "incoming/day.csv", "@7.json") == "monitoring/incoming/day.csv@7.json"
    longest = ["incoming/" + c * 1015 for c in "ab"] + ["incoming/" + "é" * 507 + "a"]
    derived = [derived_name("registry/processed/prodml-data/", n, "@1764590000000000.json") for n in longest]

    assert len(set(derived)) == 3
    for name, bounded in zip(longest, derived, strict=True):
        check_object_name(bounded)  # GCS takes it
        assert len(bounded.encode()) == MAX_NAME_BYTES
        assert bounded.startswith("registry/processed/prodml-data/incoming/" + name[9:29])  # readable
        assert bounded.endswith("@1764590000000000.json")
    reserved = derived_name("quarantine/", "x" * 1020, reserve=len(".reason.json"))
    assert len((reserved + ".reason.json").encode()) <= MAX_NAME_BYTES
    # a short name spelled like a long one's derived form gets a derived form of its own
    prefix, suffix = "registry/processed/prodml-data/", "@1764590000000000.json"
    lookalike = derived[0].removeprefix(prefix).removesuffix(suffix)
    assert derived_name(prefix, lookalike, suffix) != derived[0]
