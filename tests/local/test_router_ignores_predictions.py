"""The local router never watches the predictions bucket: it has no trigger in
infra/functions.json, so a flush of predict's log fires no function, exactly as on GCS."""

from __future__ import annotations

from shared.config import load_settings
from shared.local.router import Router


def test_the_router_watches_the_data_and_artifacts_buckets_only(tmp_path):
    settings = load_settings({"LOCAL_BUCKETS_ROOT": str(tmp_path)})
    router = Router.from_declaration(settings, urls={})
    assert set(router.folders) == {settings.data_bucket, settings.artifacts_bucket}
    assert settings.predictions_bucket not in router.folders
