"""Exported models kept as the model store keeps bundles: ``<name>/<version>/``, a production mark per name.

What a line PC serves with ``anomaly serve --runtime onnx`` (no torch there): the same
promotion and rollback, the same listing, but every version is an export folder
(:mod:`anomaly.runtime.deployed`), checked when it is read and loaded. Exports arrive with
``anomaly export NAME[:VERSION] --deploy-store DIR`` (or :meth:`DeployStore.add_export`)
under the version number they have in the training machine's store.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from anomaly.errors import DeployError
from anomaly.runtime.deployed import DEPLOY, DeployedModel, load_deployed, read_deploy
from anomaly.store import ModelStore, _make_read_only, check_model_name


class DeployStore(ModelStore):
    """A model store whose versions are exported folders (see the module docstring)."""

    MARKER = DEPLOY

    def _read(self, folder: Path) -> dict[str, Any]:
        return read_deploy(folder)

    def load(self, name: str, version: int | None = None) -> DeployedModel:  # type: ignore[override]
        return load_deployed(self.path(name, version))

    def add(self, name: str, write: Callable[[Path], Any], *, promote: bool | None = None) -> int:
        raise DeployError("this store holds exported models only: train on the training machine and bring the "
                          "version here with `anomaly export NAME[:VERSION] --deploy-store DIR`")

    def add_export(self, name: str, version: int, folder: str | os.PathLike, *, promote: bool | None = None) -> int:
        """Move an export folder in as ``name``'s ``version``.

        Args:
            name: Model name.
            version: Its version in the store it was exported from.
            folder: The export (checked with :func:`~anomaly.runtime.deployed.read_deploy`).
            promote: Mark it for production; by default only when the name has none yet.

        Raises:
            DeployError: the version is here already, or the folder is not a valid export.
        """
        deploy = read_deploy(folder)
        if deploy["model"]["name"] != name or deploy["model"].get("version") != int(version):
            raise DeployError(f"{folder} holds {deploy['model']['name']}:{deploy['model'].get('version')}, "
                              f"not {name}:{version}")
        target = self.root / check_model_name(name) / str(int(version))
        if target.exists():
            raise DeployError(f"{name}:{version} is in the deploy store at {self.root} already; versions are immutable")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(target))
        _make_read_only(target)
        if promote or (promote is None and self.production(name) is None):
            self.promote(name, int(version))
        return int(version)
