"""Typed errors shared by the library, the classical baselines and the service.

Every error says what was expected and what arrived. The service maps each class to
a stable JSON ``code`` and an HTTP status (see ``service``), so the ``code`` attribute
here is part of the public contract.
"""

from __future__ import annotations


class AnomalyError(Exception):
    """Base class of every error this project raises on purpose."""

    code = "anomaly_error"
    http_status = 500


class InvalidImageError(AnomalyError, ValueError):
    """An image could not be read, or is not of the shape or size a model accepts."""

    code = "invalid_image"
    http_status = 400


class ImageTooLargeError(InvalidImageError):
    """An image has more pixels (or bytes) than the configured limit."""

    code = "image_too_large"
    http_status = 413


class NotFittedError(AnomalyError, RuntimeError):
    """A detector was asked to score before ``fit`` was called."""

    code = "not_fitted"
    http_status = 409


class UnknownDetectorError(AnomalyError, KeyError):
    """A detector name is not in the registry."""

    code = "unknown_detector"
    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidParameterError(AnomalyError, ValueError):
    """A hyper-parameter or option has a value outside its allowed range."""

    code = "invalid_parameter"
    http_status = 400


class BackboneWeightsError(AnomalyError, RuntimeError):
    """Pretrained weights for a backbone are not available locally or do not match."""

    code = "backbone_weights"
    http_status = 409


class BundleError(AnomalyError, RuntimeError):
    """A model bundle is missing, malformed, of another format version, or tampered with."""

    code = "bundle_error"
    http_status = 409


class ModelNotFoundError(AnomalyError, LookupError):
    """No model (or no such version of it) in the model store."""

    code = "model_not_found"
    http_status = 404


class DatasetError(AnomalyError, ValueError):
    """A dataset folder does not have the expected layout or holds no usable images."""

    code = "dataset_error"
    http_status = 400


class AlignmentError(AnomalyError, RuntimeError):
    """A part could not be found or aligned to its golden template."""

    code = "alignment_failed"
    http_status = 409


class ExportError(AnomalyError, RuntimeError):
    """A model cannot be exported, or its export disagrees with the bundle (parity refused)."""

    code = "export_error"
    http_status = 409


class DeployError(AnomalyError, RuntimeError):
    """An exported model folder is incomplete, edited after export, or of another format."""

    code = "deploy_error"
    http_status = 409
