"""The web pages: inspect, onboard, models, records (server-rendered, a little JavaScript).

Every page works without JavaScript (plain forms); ``static/app.js`` makes inspect and
onboard nicer (drop an image, see the verdict without a reload; a progress bar while a
model trains) by calling the JSON API with the page's CSRF token. Forms carry the CSRF
token (Flask-WTF). With API keys required, a person signs in with a key on ``/login``.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from anomaly.calibration import Calibration
from anomaly.errors import AnomalyError, InvalidParameterError, ModelNotFoundError
from anomaly.store import ModelStore, check_model_name
from anomaly.training import TrainingOptions
from service.auth import Principal, check_role, current_principal, lookup_key
from anomaly.drift import H
from service.charts import calibration_svg, drift_svg, yield_svg
from service.db import FEEDBACK_KINDS, VERDICTS
from service.errors import BadRequestError, ConflictError
from service.jobs import ADD, AUTO, TrainingJobs, TrainingRequest, check_training
from service.limits import check_room
from service.records import (MAX_OFFSET, RecordFilter, add_feedback, get_inspection, query_inspections,
                             yield_by_day)
from service.scoring import Part, check_part_id, score_parts

bp = Blueprint("pages", __name__)
PUBLIC_ENDPOINTS = {"pages.login", "pages.logout"}


@bp.before_request
def _sign_in_first() -> BaseResponse | None:
    principal = current_principal()
    if principal.role is None and request.endpoint not in PUBLIC_ENDPOINTS:
        return redirect(url_for("pages.login", next=request.full_path if request.method == "GET" else None))
    return None


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    try:
        principal = current_principal()
    except AnomalyError:  # e.g. an error page for a request with a bad key: render it anyway
        principal = Principal("anonymous", None, "open")
    return {"principal": principal, "keys_required": current_app.config["REQUIRE_API_KEYS"],
            "is_admin": principal.allows("admin")}


def _store() -> ModelStore:
    return current_app.extensions["anomaly_store"]


def _jobs() -> TrainingJobs:
    return current_app.extensions["anomaly_jobs"]


def _production_models() -> list[dict[str, Any]]:
    store = _store()
    return [{"name": n, "version": store.production(n)} for n in store.names() if store.production(n) is not None]


def safe_next(target: str | None) -> str | None:
    """``target`` when it is a path on this site, else None (never an address given by someone else).

    Browsers drop tabs and line breaks from a ``Location`` and read a backslash as a slash,
    so ``/<tab>/evil.example`` and ``/<backslash>evil.example`` would leave the site: only a path
    that starts with one slash followed by a path character is kept.
    """
    if not target or not re.fullmatch(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@%-][^\s\\]*)?", target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


# -- sign in ----------------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | str:
    """Sign in with an API key (only needed when keys are required)."""
    error = None
    if request.method == "POST":
        record = lookup_key(current_app.extensions["anomaly_db"], request.form.get("api_key", "").strip())
        if record is None:
            error = "That key is unknown or revoked."
        else:
            session.clear()
            session["key_id"] = record.id
            return redirect(safe_next(request.args.get("next")) or url_for("pages.inspect_page"))
    return render_template("login.html", error=error)


@bp.post("/logout")
def logout() -> BaseResponse:
    """Forget the signed-in key."""
    session.clear()
    return redirect(url_for("pages.login"))


@bp.get("/")
def index() -> BaseResponse:
    return redirect(url_for("pages.inspect_page"))


# -- inspect ----------------------------------------------------------------------------------
@bp.route("/inspect", methods=["GET", "POST"])
def inspect_page() -> str | tuple[str, int]:
    """Drop an image, see the verdict, the heat-map overlay and the regions table."""
    check_role("score")
    models = _production_models()
    selected = request.values.get("model") or (models[0]["name"] if models else None)
    result, error, status = None, None, 200
    if request.method == "POST":
        upload = request.files.get("image")
        try:
            if upload is None or not selected:
                raise BadRequestError("choose a model and an image")
            part = Part(upload.read(), check_part_id(request.form.get("part_id")))
            answer = score_parts(selected, None, [part], source="page", return_overlay=True)
            result = answer["results"][0]
        except AnomalyError as exc:
            error, status = f"{exc.code}: {exc}", int(getattr(exc, "http_status", 400))
    return render_template("inspect.html", models=models, selected=selected, result=result, error=error), status


# -- onboard ----------------------------------------------------------------------------------
@bp.route("/onboard", methods=["GET", "POST"])
def onboard() -> BaseResponse | str | tuple[str, int]:
    """Create a model (or a new version) from good images; the job page shows the progress."""
    check_role("admin")
    from anomaly.detectors.registry import available_detectors

    detectors = available_detectors()
    error = None
    if request.method == "POST":
        try:
            job = _start_training_from_form()
            return redirect(url_for("pages.job_page", job_id=job["job_id"]))
        except AnomalyError as exc:
            error = f"{exc.code}: {exc}"
    return render_template("onboard.html", detectors=detectors, default=AUTO, auto=AUTO, add=ADD,
                           models=_store().names(), error=error), (400 if error else 200)


def _start_training_from_form() -> dict[str, Any]:
    from anomaly.imageio import decode_image

    config = current_app.config
    name = check_model_name(request.form.get("name", "").strip())
    detector = request.form.get("detector") or AUTO
    params: dict[str, Any] = {}
    if request.form.get("image_size"):
        try:
            params["image_size"] = int(request.form["image_size"])
        except ValueError:
            raise BadRequestError("image size must be an integer") from None
    if request.form.get("params"):
        try:
            params.update(json.loads(request.form["params"]))
        except (ValueError, TypeError):
            raise BadRequestError("parameters must be a JSON object") from None
    images = []
    for i, upload in enumerate(request.files.getlist("images")):
        data = upload.read()
        if data:
            decode_image(data, max_pixels=int(config["MAX_PIXELS"]), label=f"image {i}")
            images.append(data)
    if len(images) < 2:
        raise BadRequestError(f"choose at least 2 good images, got {len(images)}")
    check_training(detector, params, len(images))  # said now, not by the job
    return _jobs().submit(TrainingRequest(name=name, detector=detector, params=params, images=images,
                                          options=TrainingOptions(), promote=False,
                                          client=current_principal().name))


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    """A training job's progress; links to the new version when done."""
    check_role("score")
    return render_template("job.html", job=_jobs().get(job_id))


# -- models -----------------------------------------------------------------------------------
@bp.get("/models")
def models_page() -> str:
    """Every model: production version and versions."""
    check_role("score")
    store = _store()
    models = [{"name": n, "production": store.production(n), "versions": [v.summary() for v in store.list(n)]}
              for n in store.names()]
    return render_template("models.html", models=models, jobs=_jobs().list(limit=10))


@bp.get("/models/<name>")
def model_page(name: str) -> str:
    """One model's versions with their figures, promote and roll back."""
    check_role("score")
    store = _store()
    try:
        check_model_name(name)
    except InvalidParameterError:
        raise ModelNotFoundError(f"no model named {name[:70]!r}") from None
    if not store.versions(name):
        raise ModelNotFoundError(f"no model named {name!r}")
    versions = [v.summary() for v in store.list(name)]
    from service.gates import gates_of

    return render_template("model.html", name=name, production=store.production(name), versions=versions,
                           history=store.history(name), jobs=_jobs().list(model=name, limit=5),
                           gates=gates_of(current_app.extensions["anomaly_db"], name))


@bp.get("/models/<name>/<int:version>")
def version_page(name: str, version: int) -> str:
    """One version: calibration (good scores and thresholds), training facts, publish."""
    check_role("score")
    store = _store()
    check_model_name(name)
    store.path(name, version)
    manifest = store.manifest(name, version)
    cal = Calibration.from_manifest(manifest.get("calibration"))
    chart = calibration_svg(cal)
    return render_template("version.html", name=name, version=version, manifest=manifest, calibration=cal,
                           chart=chart, production=store.production(name))


@bp.get("/models/<name>/<int:version>/report")
def report_page(name: str, version: int) -> str:
    """The onboarding report of a version (:mod:`anomaly.onboarding_report`), with the rate control
    wired to a form that writes the version at the chosen rate and can publish it."""
    from anomaly import onboarding_report

    check_role("score")
    check_model_name(name)
    directory = _store().path(name, version)
    report = onboarding_report.load_report(directory)
    if report is None:
        raise ModelNotFoundError(f"{name} version {version} was not made by onboarding: it has no report")
    actions = render_template("report_actions.html", name=name, version=version,
                              production=_store().production(name))
    return onboarding_report.render_report(
        report, lambda file: url_for("pages.report_picture", name=name, version=version, file=file),
        actions=actions, version=version)


@bp.get("/models/<name>/<int:version>/report/<file>")
def report_picture(name: str, version: int, file: str) -> BaseResponse:
    """One heat map of a version's onboarding report (only the files the report lists)."""
    from flask import send_file

    from anomaly import onboarding_report

    check_role("score")
    check_model_name(name)
    directory = _store().path(name, version)
    report = onboarding_report.load_report(directory)
    path = None if report is None else onboarding_report.picture_path(directory, report, file)
    if path is None or not path.is_file():
        raise ModelNotFoundError(f"{name} version {version} has no report picture {file!r}")
    return send_file(path, mimetype="image/png", max_age=3600)


@bp.post("/models/<name>/promote")
def promote_form(name: str) -> BaseResponse:
    """Publish (promote) a version from a form."""
    check_role("admin")
    try:
        version = int(request.form.get("version", ""))
    except ValueError:
        raise BadRequestError("version must be an integer") from None
    from service.gates import GateFailedError, gated_promote

    loaded = current_app.extensions["anomaly_registry"].get(name, version)  # must load before it goes live
    force = request.form.get("force") == "1"
    try:
        gated_promote(current_app.extensions["anomaly_db"], current_app.extensions["anomaly_archive"], _store(),
                      name, version, loaded.bundle, force=force, by=current_principal().name)
    except GateFailedError as exc:
        flash(str(exc))
        return redirect(url_for("pages.model_page", name=name))
    flash(f"{name} version {version} is now in production{' (forced past its gate)' if force else ''}.")
    return redirect(url_for("pages.model_page", name=name))


@bp.post("/models/<name>/rollback")
def rollback_form(name: str) -> BaseResponse:
    """Roll production back from a form."""
    check_role("admin")
    try:
        version = _store().rollback(name)
    except ModelNotFoundError as exc:
        raise ConflictError(str(exc)) from None
    flash(f"{name} rolled back: version {version} is in production.")
    return redirect(url_for("pages.model_page", name=name))


@bp.post("/models/<name>/<int:version>/thresholds")
def thresholds_form(name: str, version: int) -> BaseResponse:
    """Move a version's thresholds from its page: a new version is written."""
    from anomaly.thresholds import ThresholdChange, set_thresholds

    check_role("admin")
    values: dict[str, float | None] = {}
    for field in ("t_review", "t_ng", "target_frr", "review_rate"):
        raw = request.form.get(field, "").strip()
        try:
            values[field] = float(raw) if raw else None
        except ValueError:
            raise BadRequestError(f"{field} must be a number") from None
    source = current_app.extensions["anomaly_registry"].resolve_version(name, version)
    check_room(name)
    new_version = set_thresholds(_store(), name, source, change=ThresholdChange(**values),
                                 promote=request.form.get("promote") == "on",
                                 changed_by=current_principal().name, reason=request.form.get("reason") or None)
    flash(f"Thresholds moved: {name} version {new_version} written from version {source}.")
    return redirect(url_for("pages.version_page", name=name, version=new_version))


# -- records ----------------------------------------------------------------------------------
@bp.get("/records")
def records_page() -> str:
    """Recent inspections with filters, and the first-pass yield over time."""
    check_role("score")
    db = current_app.extensions["anomaly_db"]
    flt = RecordFilter.from_args(request.args)
    page_arg = request.args.get("page", "0")
    # A page past the last offset the records API accepts shows the first one (PostgreSQL refused
    # a 30-digit offset with a 500).
    page = int(page_arg) if page_arg.isdigit() and int(page_arg) * 50 <= MAX_OFFSET else 0
    rows, total = query_inspections(db, flt, limit=50, offset=page * 50)
    days = yield_by_day(db, model=flt.model, since=flt.since, until=flt.until)
    return render_template("records.html", rows=rows, total=total, page=page, args=request.args,
                           verdicts=VERDICTS, models=_store().names(), chart=yield_svg(days), days=days,
                           drift=_drift_chart(db, flt.model))


def _drift_chart(db, name: str | None) -> dict[str, Any] | None:
    """The production version's drift chart and state, for the records page filtered to one model."""
    from service.drift import WINDOW, paths, status

    if not name or name not in _store().names() or _store().production(name) is None:
        return None
    model = current_app.extensions["anomaly_registry"].get(name)
    ref = model.drift_reference
    if ref is None:
        return None
    state = status(db, name, model.version, ref)["state"]
    return {"name": name, "version": model.version, "window": WINDOW, "state": state,
            "svg": drift_svg(paths(db, name, model.version, ref), H, alarm=bool(state and state["alarm"]))}


@bp.get("/records/rejected")
def rejected_page() -> str:
    """The rejected parts with their overlays."""
    check_role("score")
    args = request.args.to_dict()
    args["rejected"] = "true"
    rows, total = query_inspections(current_app.extensions["anomaly_db"], RecordFilter.from_args(args), limit=60)
    return render_template("rejected.html", rows=rows, total=total, models=_store().names(), args=request.args)


@bp.get("/records/<inspection_id>")
def record_page(inspection_id: str) -> str:
    """One inspection with its overlay, regions and feedback."""
    check_role("score")
    record = get_inspection(current_app.extensions["anomaly_db"], inspection_id)
    return render_template("record.html", record=record, kinds=FEEDBACK_KINDS)


@bp.post("/records/<inspection_id>/feedback")
def feedback_form(inspection_id: str) -> BaseResponse:
    """Mark a false alarm or a miss from the record page."""
    check_role("admin")
    add_feedback(current_app.extensions["anomaly_db"], inspection_id, request.form.get("kind", ""),
                 request.form.get("note") or None)
    flash("Feedback stored; the next training can use it.")
    return redirect(url_for("pages.record_page", inspection_id=inspection_id))


@bp.get("/docs/api")
def api_docs() -> str:
    """The API's operations, from its OpenAPI document."""
    from service.openapi import build_document

    return render_template("api_docs.html", doc=build_document(server_url=request.host_url.rstrip("/")))


def data_uri(png_base64: str | None) -> str | None:
    """``data:`` URI of a base64 PNG (for the no-JavaScript inspect answer)."""
    return f"data:image/png;base64,{png_base64}" if png_base64 else None


bp.add_app_template_filter(data_uri, "data_uri")
