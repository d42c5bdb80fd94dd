"""Room in the model store: versions per model and bytes in all, checked before anything writes a version.

A client looping over the training endpoint once wrote 568 versions (759 MB); every new version
(a training job, a threshold move) is refused with 507 ``store_full`` once the model holds
``MAX_VERSIONS_PER_MODEL`` versions or the store ``STORE_QUOTA_MB`` megabytes (no byte quota by default).
"""

from __future__ import annotations

from flask import current_app

from anomaly.store import ModelStore, folder_bytes
from service.errors import StoreFullError


def check_store_room(store: ModelStore, name: str, *, max_versions: int, quota_mb: float | None) -> None:
    """Refuse a new version of ``name`` when the model or the store is full.

    Raises:
        StoreFullError: ``name`` already has ``max_versions`` versions, or the store holds
            ``quota_mb`` megabytes or more.
    """
    if name in store.names() and len(store.versions(name)) >= max_versions:
        raise StoreFullError(f"model {name!r} already has {max_versions} versions (MAX_VERSIONS_PER_MODEL); "
                             "remove old versions from the store before adding more")
    if quota_mb is not None:
        used = folder_bytes(store.root) / 1e6
        if used >= quota_mb:
            raise StoreFullError(f"the model store holds {used:.0f} MB, its quota is {quota_mb:g} MB "
                                 "(STORE_QUOTA_MB); remove old versions before adding more")


def check_room(name: str) -> None:
    """:func:`check_store_room` for this application's store and limits (inside a request)."""
    config = current_app.config
    quota = config.get("STORE_QUOTA_MB")
    check_store_room(current_app.extensions["anomaly_store"], name, max_versions=int(config["MAX_VERSIONS_PER_MODEL"]),
                     quota_mb=float(quota) if quota is not None else None)
