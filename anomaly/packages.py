"""Installed versions of the distributions a result depends on (bundles and benchmark reports record them)."""

from __future__ import annotations

from importlib import metadata


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """``{distribution: version}`` for those of ``names`` that are installed (the others are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
