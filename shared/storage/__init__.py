"""Bucket storage: one interface (``Bucket``), a local-folder backend and a GCS backend.

Use ``open_bucket(name)`` (backend chosen by ``STORAGE_BACKEND``) or ``data_bucket()`` /
``artifacts_bucket()`` for the two buckets of the system.
"""

from __future__ import annotations

from typing import Any

from shared.config import Settings, get_settings
from shared.contracts import StorageBackend
from shared.storage.base import Bucket, ObjectInfo

__all__ = ["Bucket", "ObjectInfo", "open_bucket", "data_bucket", "artifacts_bucket"]


def open_bucket(name: str, settings: Settings | None = None, *, client: Any = None) -> Bucket:
    """Open bucket ``name`` on the configured backend.

    ``client`` is a ``google.cloud.storage.Client`` for the GCS backend (one is created when
    omitted); it is ignored by the local backend.
    """
    settings = settings or get_settings()
    if settings.storage_backend == StorageBackend.GCS:
        from shared.storage.gcs import GCSBucket

        if client is None:
            from google.cloud import storage as gcs

            client = gcs.Client()
        return GCSBucket(client, name)
    from shared.storage.local import LocalBucket

    return LocalBucket(settings.local_buckets_root, name)


def data_bucket(settings: Settings | None = None) -> Bucket:
    """The bucket where data files arrive (``DATA_BUCKET``)."""
    settings = settings or get_settings()
    return open_bucket(settings.data_bucket, settings)


def predictions_bucket(settings: Settings | None = None) -> Bucket:
    """The bucket of the prediction log (``PREDICTIONS_BUCKET``)."""
    settings = settings or get_settings()
    return open_bucket(settings.predictions_bucket, settings)


def artifacts_bucket(settings: Settings | None = None) -> Bucket:
    """The bucket of schema, models, tables and traffic (``ARTIFACTS_BUCKET``)."""
    settings = settings or get_settings()
    return open_bucket(settings.artifacts_bucket, settings)
