"""Name rules that are not tied to one backend's behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import InvalidObjectName
from shared.storage.local import LocalBucket
from shared.storage.names import check_local_object_name, check_object_name


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
