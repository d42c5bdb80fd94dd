"""The JSON API under ``/api/v1`` (described by :mod:`service.openapi`).

Every view answers JSON; every error is ``{"code", "message"}`` (see :mod:`service.errors`).
Roles: reading and scoring need ``score``; training, promotion, rollback and feedback need
``admin`` (see :mod:`service.auth`).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, session, url_for

from anomaly.calibration import Calibration
from anomaly.errors import BundleError, InvalidParameterError, ModelNotFoundError
from anomaly.store import ModelStore, check_model_name
from anomaly.training import TrainingOptions
from service.archive import FILES, Archive
from service.limits import check_room
from service.auth import UNSAFE_METHODS, check_same_origin, current_principal, key_from_headers, require
from service.db import Database
from service.errors import BadRequestError, ConflictError, ModelNotReadyError, NotFoundError, UnsupportedMediaTypeError
from service.jobs import SCORE, TrainingJobs, TrainingRequest, check_training, feedback_training_images
from service.records import (RecordFilter, add_feedback, feedback_answer, get_inspection, parse_limit, parse_time,
                             query_inspections, yield_by_day)
from service.registry import ModelRegistry
from service.scoring import Part, check_part_id, inspection_answer, score_parts

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: Content types accepted as a raw image body.
RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/x-ms-bmp", "image/tiff", "application/octet-stream")
#: Room for the multipart envelope around an image of the largest accepted size.
MULTIPART_SLACK = 256 * 1024
#: Most cross-fitting folds a training request may ask for (each fold is one more fit).
MAX_FOLDS = 20


# -- request plumbing -----------------------------------------------------------------------------
@bp.before_request
def _authenticate_and_guard() -> None:
    current_principal()  # 401 on an unknown key, before any body is read
    check_same_origin()
    if request.method in UNSAFE_METHODS and key_from_headers() is None and \
            current_app.config["SESSION_COOKIE_NAME"] in request.cookies:
        current_app.extensions["csrf"].protect()  # a browser's cookie-borne request needs the token


def _registry() -> ModelRegistry:
    return current_app.extensions["anomaly_registry"]


def _store() -> ModelStore:
    return current_app.extensions["anomaly_store"]


def _db() -> Database:
    return current_app.extensions["anomaly_db"]


def _jobs() -> TrainingJobs:
    return current_app.extensions["anomaly_jobs"]


def parse_bool(value: Any, *, field: str, default: bool = False) -> bool:
    """``true/1/yes/on`` and ``false/0/no/off`` (any case); absent means ``default``."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise BadRequestError(f"{field} must be true or false, got {str(value)[:40]!r}")


def _converted(value: Any, *, field: str, convert: Any, what: str) -> Any:
    """``None`` for an absent argument, else ``convert(value)``; 400 naming the field when it does not convert."""
    if value is None or value == "":
        return None
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError):
        raise BadRequestError(f"{field} must be {what}, got {str(value)[:40]!r}") from None


def training_options(form: Any) -> TrainingOptions:
    """The :class:`~anomaly.training.TrainingOptions` of a training request's form: the ``anomaly train`` flags.

    Raises:
        BadRequestError: a field that is not a number, boolean or JSON object as needed.
        InvalidParameterError: a value out of range or not finite (400 as well).
    """
    grading = None
    if form.get("grading"):
        try:
            grading = json.loads(form["grading"])
        except ValueError:
            raise BadRequestError('grading must be a JSON object, e.g. {"ng_if_any": {"length_mm": 2}}') from None
    n_folds = parse_int(form.get("n_folds"), field="n_folds", minimum=2, maximum=MAX_FOLDS)
    return TrainingOptions.from_dict({
        **{key: _converted(form.get(key), field=key, convert=float, what="a number")
           for key in ("target_frr", "review_rate", "pixel_rate", "pixel_size_mm")},
        "n_folds": n_folds,
        "seed": parse_int(form.get("seed"), field="seed", minimum=0),
        "grading": grading,
        "detection": parse_bool(form.get("detection"), field="detection", default=True),
        "max_images": parse_int(form.get("max_images"), field="max_images", minimum=2),
    })


def parse_int(value: Any, *, field: str, minimum: int | None = None, maximum: int = 2**31 - 1) -> int | None:
    """An optional integer argument (at most ``maximum``: what a database INTEGER holds)."""
    number = _converted(value, field=field, convert=int, what="an integer")
    if number is None:
        return None
    if minimum is not None and number < minimum:
        raise BadRequestError(f"{field} must be >= {minimum}, got {number}")
    if number > maximum:
        raise BadRequestError(f"{field} must be <= {maximum}, got {str(number)[:40]}")
    return number


def _option(name: str) -> Any:
    """An option from the query string or, for multipart requests, the form."""
    value = request.args.get(name)
    if value is None and request.mimetype == "multipart/form-data":
        value = request.form.get(name)
    return value


def _json_or_form() -> dict[str, Any]:
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequestError("the body must be a JSON object")
        return body
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return request.form.to_dict()
    if request.content_length:
        raise UnsupportedMediaTypeError(f"expected application/json, got {request.mimetype or 'no content type'}")
    return {}


def _checked_name(name: str) -> str:
    try:
        return check_model_name(name)
    except InvalidParameterError:
        raise ModelNotFoundError(f"no model named {name[:70]!r}") from None


# -- models -------------------------------------------------------------------------------------
@bp.get("/models")
@require("score")
def list_models() -> Response:
    """Every model with its versions and production mark."""
    store = _store()
    models = []
    for name in store.names():
        versions = [v.summary() for v in store.list(name)]
        models.append({"name": name, "production": store.production(name), "versions": versions})
    return jsonify({"models": models})


@bp.get("/models/<name>")
@require("score")
def show_model(name: str) -> Response:
    """One model: versions, production mark and its history."""
    name = _checked_name(name)
    store = _store()
    if not store.versions(name):
        if _jobs().active_for(name):
            raise ModelNotReadyError(f"model {name!r} is being trained; no version yet")
        raise ModelNotFoundError(f"no model named {name!r}")
    from service.gates import gates_of

    return jsonify({"name": name, "production": store.production(name),
                    "versions": [v.summary() for v in store.list(name)], "history": store.history(name),
                    "gates": gates_of(_db(), name)})


@bp.get("/models/<name>/versions/<int:version>")
@require("score")
def show_version(name: str, version: int) -> Response:
    """One version's manifest, calibration and metrics."""
    name = _checked_name(name)
    store = _store()
    store.path(name, version)  # 404 if absent
    manifest = store.manifest(name, version)
    return jsonify({"name": name, "version": version, "production": store.production(name) == version,
                    "detector": manifest.get("detector"), "created": manifest.get("created"),
                    "calibration": manifest.get("calibration"), "metrics": manifest.get("metrics"),
                    "manifest": manifest})


@bp.post("/models/<name>/promote")
@require("admin")
def promote(name: str) -> Response:
    """Put a version in production: it is loaded, then must pass its gate (service.gates) unless forced."""
    from service.gates import gated_promote

    name = _checked_name(name)
    body = _json_or_form()
    version = parse_int(body.get("version"), field="version", minimum=1)
    if version is None:
        raise BadRequestError("version is required, e.g. {\"version\": 2}")
    force = parse_bool(body.get("force"), field="force")
    store = _store()
    previous = store.production(name)
    loaded = _registry().get(name, version)  # refuses a version that does not load (404, 409)
    gate = gated_promote(_db(), current_app.extensions["anomaly_archive"], store, name, version, loaded.bundle,
                         force=force, by=current_principal().name)
    current_app.logger.info("model %s: version %s promoted by %s%s", name, version, current_principal().name,
                            " (forced past its gate)" if force and not gate.passed else "")
    return jsonify({"name": name, "production": version, "previous": previous, "gate": gate.to_dict(),
                    "forced": bool(force and not gate.passed)})


@bp.post("/models/<name>/rollback")
@require("admin")
def rollback(name: str) -> Response:
    """Return production to the version in production before the current one."""
    name = _checked_name(name)
    store = _store()
    previous = store.production(name)
    if previous is None:
        _registry().resolve_version(name)  # 404 or 409 with the right message
    try:
        version = store.rollback(name)
    except ModelNotFoundError as exc:
        raise ConflictError(str(exc)) from None
    try:
        _registry().get(name, version)
    except BundleError:
        current_app.logger.error("model %s: rolled back to version %s, which does not load", name, version)
        raise
    current_app.logger.info("model %s: rolled back from %s to %s by %s", name, previous, version,
                            current_principal().name)
    return jsonify({"name": name, "production": version, "previous": previous})


@bp.get("/models/<name>/drift")
@require("score")
def drift(name: str) -> Response:
    """Whether the good parts of a version (default: production) drift from its calibration (service.drift)."""
    from service.drift import status

    name = _checked_name(name)
    version = parse_int(request.args.get("version"), field="version", minimum=1)
    model = _registry().get(name, version)
    return jsonify(status(_db(), name, model.version, model.drift_reference))


@bp.post("/models/<name>/drift/reset")
@require("admin")
def drift_reset(name: str) -> Response:
    """Clear a version's drift alarm (default: production) once its cause is fixed."""
    from service.drift import reset

    name = _checked_name(name)
    version = parse_int(_json_or_form().get("version"), field="version", minimum=1)
    model = _registry().get(name, version)
    done = reset(_db(), name, model.version)
    current_app.logger.info("model %s version %s: drift alarm reset by %s", name, model.version,
                            current_principal().name)
    return jsonify({"name": name, "version": model.version, "reset": done})


_THRESHOLD_FIELDS = ("t_ng", "t_review", "target_frr", "review_rate", "pixel_threshold", "pixel_rate")


@bp.post("/models/<name>/thresholds")
@require("admin")
def move_thresholds(name: str) -> tuple[Response, int]:
    """Move thresholds without retraining: writes a new version (the source stays as it was)."""
    from anomaly.thresholds import ThresholdChange, set_thresholds

    name = _checked_name(name)
    body = _json_or_form()
    values: dict[str, float | None] = {}
    for field in _THRESHOLD_FIELDS:
        raw = body.get(field)
        if raw is None or raw == "":
            values[field] = None
            continue
        if isinstance(raw, bool):
            raise BadRequestError(f"{field} must be a number")
        try:
            values[field] = float(raw)
        except (TypeError, ValueError):
            raise BadRequestError(f"{field} must be a number, got {str(raw)[:40]!r}") from None
        if values[field] != values[field] or values[field] in (float("inf"), float("-inf")):
            raise BadRequestError(f"{field} must be a finite number")
    grading = body.get("grading")
    if grading is not None and not isinstance(grading, dict):
        raise BadRequestError("grading must be a JSON object of rules")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise BadRequestError("reason must be a string of at most 500 characters")
    version = parse_int(body.get("version"), field="version", minimum=1)
    promote_now = parse_bool(body.get("promote"), field="promote")
    store = _store()
    source = _registry().resolve_version(name, version)
    check_room(name)
    new_version = set_thresholds(store, name, source, change=ThresholdChange(grading=grading, **values),
                                 promote=False, changed_by=current_principal().name, reason=reason)
    if promote_now:  # through the gate: moved thresholds can miss a confirmed defect
        from service.gates import gated_promote

        gated_promote(_db(), current_app.extensions["anomaly_archive"], store, name, new_version,
                      _registry().get(name, new_version).bundle, force=False, by=current_principal().name)
    calibration = Calibration.from_manifest(store.manifest(name, new_version).get("calibration"))
    current_app.logger.info("model %s: thresholds moved from version %s to new version %s by %s", name, source,
                            new_version, current_principal().name)
    return jsonify({"name": name, "version": new_version, "from_version": source,
                    "production": store.production(name),
                    "thresholds": {k: getattr(calibration, k) for k in ("t_review", "t_ng", "pixel_threshold")}}), 201


@bp.get("/detectors")
@require("score")
def detectors() -> Response:
    """Detector names a new model can be trained with."""
    from anomaly.detectors.registry import available_detectors

    return jsonify({"detectors": available_detectors(), "default": current_app.config["DEFAULT_DETECTOR"]})


# -- scoring ------------------------------------------------------------------------------------
def _single_part() -> Part:
    request.max_content_length = int(current_app.config["MAX_IMAGE_BYTES"]) + MULTIPART_SLACK
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise BadRequestError("the multipart field 'image' is missing")
        data = upload.read()
    elif mimetype in RAW_IMAGE_TYPES:
        data = request.get_data(cache=False)
    else:
        raise UnsupportedMediaTypeError(
            f"send the image as multipart/form-data (field 'image') or as a raw body of type "
            f"{', '.join(RAW_IMAGE_TYPES[:5])}; got {mimetype or 'no content type'}")
    return Part(data=data, part_id=check_part_id(_option("part_id")))


@bp.post("/models/<name>/score")
@require("score")
def score(name: str) -> tuple[Response, int]:
    """Judge one part; 409 with verdict ALIGNMENT_FAILED (recorded) if it cannot be aligned."""
    name = _checked_name(name)
    part = _single_part()
    version = parse_int(_option("version"), field="version", minimum=1)
    return_map = parse_bool(_option("return_map"), field="return_map")
    return_overlay = parse_bool(_option("return_overlay"), field="return_overlay")
    answer = _score_or_not_ready(name, version, [part], "api", return_map, return_overlay)
    item = answer["results"][0]
    if answer.get("replayed"):
        item["replayed"] = True
    else:
        item["timings_ms"]["total"] = answer["timings_ms"]["total"]
    if item["verdict"] == "ALIGNMENT_FAILED":
        error = item.get("error") or {}
        body = {"code": error.get("code", "alignment_failed"),
                "message": error.get("message", "the part could not be aligned"), **item}
        return jsonify(body), 409
    return jsonify(item), 200


def _images_with_part_ids(most: int, what: str) -> tuple[list[Any], list[str | None]]:
    """A multipart request's ``images`` fields and their ``part_id`` fields (one per image, or none).

    Raises:
        UnsupportedMediaTypeError: not multipart/form-data (415).
        BadRequestError: no images, more than ``most``, or part ids that do not pair with them (400).
    """
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaTypeError(f"send the images as multipart/form-data (fields 'images'), "
                                        f"got {request.mimetype or 'no content type'}")
    uploads = request.files.getlist("images")
    if not uploads:
        raise BadRequestError("no multipart fields 'images'")
    if len(uploads) > most:
        raise BadRequestError(f"at most {most} {what}, got {len(uploads)}")
    part_ids = request.form.getlist("part_id")
    if part_ids and len(part_ids) != len(uploads):
        raise BadRequestError(f"give one part_id per image or none: {len(part_ids)} part_id for "
                              f"{len(uploads)} images")
    return uploads, [check_part_id(p) for p in part_ids] if part_ids else [None] * len(uploads)


@bp.post("/models/<name>/score-batch")
@require("score")
def score_batch(name: str) -> tuple[Response, int]:
    """Judge several parts in one request (all recorded, or none if one image is bad)."""
    name = _checked_name(name)
    config = current_app.config
    request.max_content_length = min(int(config["MAX_UPLOAD_BYTES"]),
                                     int(config["MAX_BATCH"]) * (int(config["MAX_IMAGE_BYTES"]) + MULTIPART_SLACK))
    uploads, part_ids = _images_with_part_ids(int(config["MAX_BATCH"]), "parts per batch")
    parts = [Part(upload.read(), part_id) for upload, part_id in zip(uploads, part_ids)]
    version = parse_int(_option("version"), field="version", minimum=1)
    return_map = parse_bool(_option("return_map"), field="return_map")
    return_overlay = parse_bool(_option("return_overlay"), field="return_overlay")
    answer = _score_or_not_ready(name, version, parts, "batch", return_map, return_overlay)
    return jsonify(answer), 200


def _score_or_not_ready(name: str, version: int | None, parts: list[Part], source: str,
                        return_map: bool, return_overlay: bool) -> dict[str, Any]:
    """Score and record, with the request's ``Idempotency-Key`` (a retry gets the stored answer)."""
    try:
        return score_parts(name, version, parts, source=source, return_map=return_map,
                           return_overlay=return_overlay, idempotency_key=request.headers.get("Idempotency-Key"))
    except ModelNotFoundError:
        if version is None and _jobs().active_for(name):
            raise ModelNotReadyError(f"model {name!r} is being trained; no version to score with yet") from None
        raise


# -- training -------------------------------------------------------------------------------------
@bp.post("/models/<name>/versions")
@require("admin")
def train_version(name: str) -> tuple[Response, int, dict[str, str]]:
    """Start training a new version from uploaded good images; poll the job it returns."""
    from anomaly.imageio import decode_image

    config = current_app.config
    check_model_name(name)  # 400: the name becomes a folder
    if config["RUNTIME"] == "onnx":
        from anomaly.errors import DeployError

        raise DeployError("this service serves exported models (runtime onnx): train on the training machine and "
                          "bring the version here with `anomaly export NAME[:VERSION] --deploy-store DIR`")
    request.max_content_length = int(config["MAX_UPLOAD_BYTES"])
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaTypeError(f"send the good images as multipart/form-data (fields 'images'), "
                                        f"got {request.mimetype or 'no content type'}")
    form = request.form
    detector = form.get("detector") or config["DEFAULT_DETECTOR"]
    try:
        params = json.loads(form.get("params") or "{}")
    except ValueError:
        raise BadRequestError("params must be a JSON object, e.g. {\"image_size\": 256}") from None
    if not isinstance(params, dict):
        raise BadRequestError("params must be a JSON object")
    check_training(detector, params, len(request.files.getlist("images")))
    options = training_options(form)
    promote_when_done = parse_bool(form.get("promote"), field="promote")
    use_feedback = parse_bool(form.get("use_feedback"), field="use_feedback")
    uploads = request.files.getlist("images")
    if len(uploads) > int(config["MAX_TRAIN_IMAGES"]):
        raise BadRequestError(f"at most {config['MAX_TRAIN_IMAGES']} images per training, got {len(uploads)}")
    images = []
    for i, upload in enumerate(uploads):
        data = upload.read()
        decode_image(data, max_pixels=int(config["MAX_PIXELS"]), label=f"image {i}")  # 400/413 now, not later
        images.append(data)
    extra = feedback_training_images(_db(), config["ARCHIVE_DIR"], name) if use_feedback else []
    if len(images) + len(extra) < 2:
        raise BadRequestError(f"training needs at least 2 good images (fields 'images'), got {len(images)}")
    job = _jobs().submit(TrainingRequest(
        name=name, detector=detector, params=params, images=images + extra, options=options,
        promote=promote_when_done, client=current_principal().name, extra_images=len(extra)))
    location = url_for("api.show_job", job_id=job["job_id"])
    job["status_url"] = location
    return jsonify(job), 202, {"Location": location}


@bp.post("/models/<name>/score-jobs")
@require("score")
def score_job(name: str) -> tuple[Response, int, dict[str, str]]:
    """Queue a scoring job: many parts judged and recorded by a job worker, one batch id; poll the job."""
    from anomaly.imageio import decode_image
    from anomaly.training import TrainingOptions

    name = _checked_name(name)
    config = current_app.config
    request.max_content_length = int(config["MAX_UPLOAD_BYTES"])
    uploads, part_ids = _images_with_part_ids(int(config["MAX_TRAIN_IMAGES"]), "images per scoring job")
    version = parse_int(_option("version"), field="version", minimum=1)
    _registry().resolve_version(name, version)  # 404 now, not in the job
    images = []
    for i, upload in enumerate(uploads):
        data = upload.read()
        decode_image(data, max_pixels=int(config["MAX_PIXELS"]), max_bytes=int(config["MAX_IMAGE_BYTES"]),
                     label=f"image {i}")  # 400/413 now, not later
        images.append(data)
    params: dict[str, Any] = {"version": version} if version is not None else {}
    if any(part_ids):
        params["part_ids"] = part_ids
    check_training(SCORE, params, len(images))
    job = _jobs().submit(TrainingRequest(name=name, detector=SCORE, params=params, images=images,
                                         options=TrainingOptions(), promote=False, client=current_principal().name))
    location = url_for("api.show_job", job_id=job["job_id"])
    job["status_url"] = location
    job["records_url"] = url_for("api.list_inspections", batch_id=job["job_id"])
    return jsonify(job), 202, {"Location": location}


@bp.get("/jobs")
@require("score")
def list_jobs() -> Response:
    """Recent training jobs, newest first (``model`` filters)."""
    limit, _ = parse_limit(request.args, default=50)
    return jsonify({"jobs": _jobs().list(model=request.args.get("model") or None, limit=limit)})


@bp.get("/jobs/<job_id>")
@require("score")
def show_job(job_id: str) -> Response:
    """One training job: status, stage, progress, and the version it made."""
    return jsonify(_jobs().get(job_id))


# -- records ----------------------------------------------------------------------------------
def _record_json(record: Any) -> dict[str, Any]:
    item = inspection_answer(record)
    item["feedback"] = [feedback_answer(fb) for fb in record.feedback]
    if record.archive_path:
        item["files"] = {kind: url_for("api.inspection_file", inspection_id=record.id, kind=kind)
                         for kind in FILES}
    return item


@bp.get("/inspections")
@require("score")
def list_inspections() -> Response:
    """Stored inspections, newest first, filtered by model, version, verdict, part id, time."""
    flt = RecordFilter.from_args(request.args)
    limit, offset = parse_limit(request.args)
    rows, total = query_inspections(_db(), flt, limit=limit, offset=offset)
    return jsonify({"total": total, "limit": limit, "offset": offset, "items": [_record_json(r) for r in rows]})


@bp.get("/inspections/<inspection_id>")
@require("score")
def show_inspection(inspection_id: str) -> Response:
    """One stored inspection with its feedback."""
    return jsonify(_record_json(get_inspection(_db(), inspection_id)))


@bp.get("/inspections/<inspection_id>/<kind>")
@require("score")
def inspection_file(inspection_id: str, kind: str) -> Response:
    """An archived ``image``, ``map``, ``overlay`` or ``thumbnail`` of an inspection."""
    if kind not in FILES:
        raise NotFoundError(f"no file {kind[:20]!r}; files are {', '.join(FILES)}")
    record = get_inspection(_db(), inspection_id)
    archive: Archive = current_app.extensions["anomaly_archive"]
    stats = record.map_stats or {}
    label = f"{record.verdict} {record.calibrated_score:.2f}" if record.calibrated_score is not None else record.verdict
    path = archive.file(record.archive_path, kind, vmin=float(stats.get("vmin", 0.0)),
                        vmax=float(stats.get("vmax", 1.0)), pixel_threshold=stats.get("pixel_threshold"),
                        label=label)
    if path is None:
        raise NotFoundError(f"inspection {record.id} has no archived {kind}")
    return send_file(path, max_age=3600)


@bp.post("/inspections/<inspection_id>/feedback")
@require("admin")
def feedback(inspection_id: str) -> tuple[Response, int]:
    """Mark a past inspection as a false alarm or a miss."""
    body = _json_or_form()
    fb = add_feedback(_db(), inspection_id, body.get("kind"), body.get("note"))
    return jsonify(feedback_answer(fb)), 201


@bp.get("/yield")
@require("score")
def first_pass_yield() -> Response:
    """Pass rate per model per UTC day (the line's first-pass yield)."""
    args = request.args
    days = yield_by_day(_db(), model=args.get("model") or None,
                        since=parse_time(args.get("since"), field="since"),
                        until=parse_time(args.get("until"), field="until", end_of_day=True))
    return jsonify({"days": days})


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document of this API."""
    from service.openapi import build_document

    return jsonify(build_document(server_url=request.host_url.rstrip("/")))


@bp.get("/whoami")
def whoami() -> Response:
    """The caller's key name and role (``anonymous`` when no key is needed or sent)."""
    principal = current_principal()
    return jsonify({"name": principal.name, "role": principal.role, "via": principal.via,
                    "keys_required": bool(current_app.config["REQUIRE_API_KEYS"]),
                    "signed_in": session.get("key_id") is not None})
