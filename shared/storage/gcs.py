"""The Cloud Storage backend, on ``google-cloud-storage``, with the local backend's semantics.

Errors map to ``shared.errors``: 404 → ``NotFound``, 412 → ``PreconditionFailed``, any other API,
authentication, transport or checksum failure (after the library's retries) → ``StorageError``.

Retries: every call retries transient faults (429, 5xx, connection errors) with the library's
``DEFAULT_RETRY``, passed explicitly. google-cloud-storage 3.x already does so for uploads (2.x
retried them only with a precondition), but rewrite (our copy) still defaults to "only with a
precondition". Unconditional writes are last-writer-wins and the retry happens before our call
returns, so a late duplicate is an ordering the caller already allowed. Known consequence, left to
callers: a conditional write whose response was lost may, on retry, report ``PreconditionFailed``
although it landed (the retry meets its own generation); compare-and-swap callers re-read and
decide again, and only-if-absent markers should tolerate finding their own write.

Uploads: ``write`` (bytes already in memory: models, cards, markers, pointers) always sends one
request, a multipart upload, whatever the size, so its precondition is decided by the very request
that carries the bytes (google-cloud-storage would switch to a resumable upload above 8 MiB, and
a model can be that big). ``upload`` (files, streamed) keeps the library's choice: resumable above
8 MiB, resumable after a dropped connection; GCS enforces its precondition too.

Custom metadata: set as ``blob.metadata`` before the upload, google-cloud-storage sends it in the
object resource of that upload (the JSON part of the multipart request, or the body of the
resumable upload's first request), so content and metadata land as one generation; GCS rewrite
(our copy) keeps the source's metadata, since the destination resource we send names none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY, ConditionalRetryPolicy
from google.resumable_media import common as media

from shared.errors import NotFound, PreconditionFailed, StorageError
from shared.storage.base import Bucket, ObjectInfo
from shared.storage.metadata import check_metadata
from shared.storage.names import check_bucket_name, check_object_name, default_content_type

# Every failure of the library and its transports (after its own retries) that a later attempt
# may not meet: API errors, token refresh and transport failures of google-auth (a metadata server
# hiccup), a download whose checksum did not match or an unexpected status of resumable media,
# and connection errors or timeouts however they surface (requests, or the socket itself).
_TRANSIENT: tuple[type[Exception], ...] = (
    gexc.GoogleAPIError,
    auth_exc.TransportError,
    auth_exc.RefreshError,
    media.DataCorruption,
    media.InvalidResponse,
    requests.RequestException,
    ConnectionError,
    TimeoutError,
)

_MAX_ATTEMPTS = 10  # reads retried when the object is overwritten between stat and download


class _SingleRequestBlob(gcs.Blob):
    """A blob whose uploads are one request (a multipart upload) at any size.

    google-cloud-storage's ``Blob._do_upload`` picks a resumable upload for anything above
    ``_MAX_MULTIPART_SIZE`` (8 MiB): several requests, the precondition sent with the first and
    decided by the server only when the last one completes (fake-gcs-server 1.54 never decides
    it). Overriding that one choice keeps the rest of the library's upload path: checksums,
    retries, the error translation of ``upload_from_string``.
    """

    def _do_upload(  # the library's private method, as of the pinned google-cloud-storage 3.17
        self,
        client: gcs.Client | None,
        stream: Any,
        content_type: str | None,
        size: int | None,
        *conditions: Any,
        crc32c_checksum_value: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        retry = options.get("retry")
        if isinstance(retry, ConditionalRetryPolicy):  # what the library's _do_upload does first
            predefined_acl, if_generation_match, _, if_metageneration_match, _ = conditions
            options["retry"] = retry.get_retry_policy_if_conditions_met(
                query_params={
                    "ifGenerationMatch": if_generation_match,
                    "ifMetagenerationMatch": if_metageneration_match,
                }
            )
        response = self._do_multipart_upload(client, stream, content_type, size, *conditions, **options)
        return dict(response.json())


def _set_metadata(blob: gcs.Blob, metadata: Mapping[str, str] | None) -> None:
    """Give the upload of ``blob`` its custom metadata, refused here, before any request, if GCS
    would refuse it. None or empty sets nothing: the new generation has no metadata."""
    checked = check_metadata(metadata)
    if checked:
        blob.metadata = checked


class GCSBucket(Bucket):
    """A Cloud Storage bucket (``client`` is a ``google.cloud.storage.Client``)."""

    def __init__(self, client: gcs.Client, name: str) -> None:
        self._name = check_bucket_name(name)
        self._client = client
        self._bucket = client.bucket(name)

    def __repr__(self) -> str:
        return f"GCSBucket({self._name!r})"

    @property
    def name(self) -> str:
        """The bucket's name."""
        return self._name

    # --- helpers ---------------------------------------------------------------------------

    def _raise(self, exc: Exception, name: str, if_generation_match: int | None = None) -> NoReturn:
        where = f"object {name!r} in bucket gs://{self._name}"
        if isinstance(exc, gexc.NotFound):
            raise NotFound(f"{where} not found (or the bucket does not exist)") from exc
        if isinstance(exc, gexc.PreconditionFailed):
            raise PreconditionFailed(
                f"{where}: precondition if_generation_match={if_generation_match} does not hold"
            ) from exc
        raise StorageError(f"{where}: {type(exc).__name__}: {exc}") from exc

    @contextlib.contextmanager
    def _mapped(self, name: str, if_generation_match: int | None = None) -> Iterator[None]:
        """Translate the library's errors into ours."""
        try:
            yield
        except _TRANSIENT as exc:
            self._raise(exc, name, if_generation_match)

    def _info(self, blob: gcs.Blob) -> ObjectInfo:
        return ObjectInfo(
            bucket=self._name,
            name=blob.name,
            size=int(blob.size or 0),
            generation=int(blob.generation),
            content_type=blob.content_type,
            updated=blob.updated,
            metadata=dict(blob.metadata or {}),  # the library gives None for an object without any
        )

    def _live_blob(self, name: str) -> gcs.Blob:
        """The live version's metadata; the blob is pinned to its generation for downloads."""
        with self._mapped(name):
            blob = self._bucket.get_blob(name)
        if blob is None:
            raise NotFound(f"object {name!r} in bucket gs://{self._name} not found")
        return blob

    # --- reading ---------------------------------------------------------------------------

    def read(self, name: str) -> bytes:
        """Return the object's bytes; ``NotFound`` if absent."""
        check_object_name(name)
        with self._mapped(name):
            data: bytes = self._bucket.blob(name).download_as_bytes()  # the library is untyped
            return data

    def read_with_info(self, name: str) -> tuple[bytes, ObjectInfo]:
        """Return the bytes and the info of the very same generation.

        The metadata comes first, then the download asks for exactly that generation; if it was
        overwritten in between (404 for that generation), start over.
        """
        check_object_name(name)
        for _ in range(_MAX_ATTEMPTS):
            blob = self._live_blob(name)
            info = self._info(blob)  # before the download, which rewrites blob's properties
            try:
                with self._mapped(name):
                    data = blob.download_as_bytes()
            except NotFound:
                continue
            return data, info
        raise StorageError(
            f"object {name!r} in bucket gs://{self._name} changed {_MAX_ATTEMPTS} times while read"
        )

    def download(self, name: str, path: Path) -> ObjectInfo:
        """Stream the object (that generation) to the local file ``path``."""
        check_object_name(name)
        for _ in range(_MAX_ATTEMPTS):
            blob = self._live_blob(name)
            info = self._info(blob)
            try:
                with self._mapped(name):
                    blob.download_to_filename(str(path))
            except NotFound:
                continue
            return info
        raise StorageError(
            f"object {name!r} in bucket gs://{self._name} changed {_MAX_ATTEMPTS} times while read"
        )

    def stat(self, name: str) -> ObjectInfo:
        """Size, generation, content type, update time and metadata; ``NotFound`` if absent."""
        check_object_name(name)
        return self._info(self._live_blob(name))

    def exists(self, name: str) -> bool:
        """Whether the object exists."""
        check_object_name(name)
        with self._mapped(name):
            return self._bucket.get_blob(name) is not None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose names start with ``prefix``, in name order (as GCS returns them)."""
        with self._mapped(prefix):
            for blob in self._client.list_blobs(self._name, prefix=prefix or None):
                yield self._info(blob)

    # --- writing ---------------------------------------------------------------------------

    def write(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Write content and ``metadata`` in one request (GCS writes are atomic); return the new
        generation."""
        check_object_name(name)
        blob = _SingleRequestBlob(name, bucket=self._bucket)
        _set_metadata(blob, metadata)
        with self._mapped(name, if_generation_match):
            blob.upload_from_string(
                data,
                content_type=content_type or default_content_type(name),
                if_generation_match=if_generation_match,
                retry=DEFAULT_RETRY,
            )
        return int(blob.generation)

    def upload(
        self,
        name: str,
        path: Path,
        *,
        content_type: str | None = None,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Upload a local file and ``metadata`` as the object (resumable for big files); return the
        new generation."""
        check_object_name(name)
        blob = self._bucket.blob(name)
        _set_metadata(blob, metadata)
        with self._mapped(name, if_generation_match):
            blob.upload_from_filename(
                str(path),
                content_type=content_type or default_content_type(name),
                if_generation_match=if_generation_match,
                retry=DEFAULT_RETRY,
            )
        return int(blob.generation)

    def delete(self, name: str, *, if_generation_match: int | None = None) -> None:
        """Delete the object; ``NotFound`` if absent, ``PreconditionFailed`` if it does not hold."""
        check_object_name(name)
        with self._mapped(name, if_generation_match):
            self._bucket.blob(name).delete(if_generation_match=if_generation_match, retry=DEFAULT_RETRY)

    def copy(
        self,
        name: str,
        dest: Bucket,
        dest_name: str,
        *,
        if_generation_match: int | None = None,
    ) -> int:
        """Server-side copy to another ``GCSBucket``; the precondition is on the destination.

        Uses rewrite (not copy), which works for objects of any size and across locations and
        storage classes, looping on the rewrite token.
        """
        if not isinstance(dest, GCSBucket):
            raise TypeError(f"GCSBucket.copy needs a GCSBucket destination, not {type(dest).__name__}")
        check_object_name(name)
        check_object_name(dest_name)
        source = self._bucket.blob(name)
        target = dest._bucket.blob(dest_name)
        token: str | None = None
        with self._mapped(name, if_generation_match):
            while True:
                token, _done, _total = target.rewrite(
                    source,
                    token=token,
                    if_generation_match=if_generation_match,
                    retry=DEFAULT_RETRY,
                )
                if token is None:
                    break
        return int(target.generation)
