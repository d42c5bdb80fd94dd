"""The OpenAPI 3.0 document of the JSON API, served at ``/api/v1/openapi.json``.

Written by hand (one place, next to nothing generated) and checked by the tests against
the application's routes, so a route cannot be added without being described.
"""

from __future__ import annotations

from typing import Any

from anomaly import __version__

JSON = "application/json"
VERDICT = {"type": "string", "enum": ["GOOD", "REVIEW", "NG", "ALIGNMENT_FAILED"]}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Bad request or undecodable image", 401: "API key missing or invalid",
            403: "Role not allowed or cross-site request", 404: "Unknown model, version or record",
            409: "Model not ready, or the request conflicts with the stored state",
            413: "Body or image too large", 415: "Wrong content type",
            429: "Too many jobs queued or running for this client", 503: "Storage unavailable; nothing stored"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_NAME = {"name": "name", "in": "path", "required": True, "description": "Model name",
         "schema": {"type": "string", "pattern": NAME_PATTERN}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
_ID = {"name": "inspection_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 36}}
_SCORE_OPTIONS = [
    _query("part_id", {"type": "string", "maxLength": 128}, "The line's id of the part (recorded)"),
    _query("version", {"type": "integer", "minimum": 1}, "Model version; default: production"),
    _query("return_map", {"type": "boolean"}, "Return the anomaly map (8-bit PNG, base64, with its scale)"),
    _query("return_overlay", {"type": "boolean"}, "Return the heat-map overlay (PNG, base64)"),
    {"name": "Idempotency-Key", "in": "header", "required": False,
     "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"},
     "description": "Makes a retry safe: the same key with the same request answers the stored result "
                    "(\"replayed\": true) instead of scoring and recording the part again; the same key with "
                    "another request is refused (409 idempotency_key_reused)"},
]
_RECORD_FILTERS = [
    _query("model", {"type": "string"}, "Model name"),
    _query("version", {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}, "Model version"),
    _query("verdict", VERDICT, "Verdict"),
    _query("part_id", {"type": "string", "maxLength": 128}, "Part id"),
    _query("batch_id", {"type": "string", "maxLength": 36}, "Batch id (a score-batch answer's, or a scoring job's id)"),
    _query("since", {"type": "string", "format": "date-time"}, "From this time (ISO 8601, UTC if no offset)"),
    _query("until", {"type": "string", "format": "date-time"}, "Before this time (a bare date: through that day)"),
    _query("rejected", {"type": "boolean"}, "Only REVIEW, NG and ALIGNMENT_FAILED"),
    _query("feedback", {"type": "string", "enum": ["false_alarm", "miss", "confirmed", "any"]},
           "Only records with feedback"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size (default 100)"),
    _query("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}, "Records to skip"),
]

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["code", "message"],
              "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
    "Thresholds": {"type": "object", "properties": {
        "t_review": {"type": "number", "nullable": True, "description": "score at or above: REVIEW"},
        "t_ng": {"type": "number", "nullable": True, "description": "score at or above: NG"},
        "pixel_threshold": {"type": "number", "nullable": True},
        "method": {"type": "string", "nullable": True}}},
    "ModelRef": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "integer"},
                                                  "detector": {"type": "string"}}},
    "Region": {"type": "object", "additionalProperties": True, "description":
               "A defect region: bbox, area_px, length_px, width_px, mean_score, max_score, contrast, polarity"},
    "Inspection": {"type": "object", "required": ["inspection_id", "verdict", "model"], "properties": {
        "inspection_id": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "part_id": {"type": "string", "nullable": True},
        "model": _ref("ModelRef"),
        "verdict": VERDICT,
        "score": {"type": "number", "nullable": True, "description": "raw anomaly score (higher = worse)"},
        "calibrated_score": {"type": "number", "nullable": True, "description": "NG threshold at 1.0"},
        "thresholds": _ref("Thresholds"),
        "regions": {"type": "array", "items": _ref("Region")},
        "map_stats": {"type": "object", "nullable": True, "additionalProperties": True},
        "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
        "map": {"type": "object", "nullable": True, "properties": {
            "png_base64": {"type": "string"}, "vmin": {"type": "number"}, "vmax": {"type": "number"},
            "encoding": {"type": "string"}}},
        "overlay_png_base64": {"type": "string", "nullable": True},
        "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
        "feedback": {"type": "array", "items": _ref("Feedback")},
    }},
    "AlignmentFailed": {"allOf": [_ref("Error"), _ref("Inspection")]},
    "Batch": {"type": "object", "properties": {
        "model": _ref("ModelRef"), "batch_id": {"type": "string"},
        "results": {"type": "array", "items": _ref("Inspection")},
        "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}}}},
    "VersionSummary": {"type": "object", "properties": {
        "name": {"type": "string"}, "version": {"type": "integer"}, "production": {"type": "boolean"},
        "detector": {"type": "string"}, "created": {"type": "string"},
        "n_train": {"type": "integer", "nullable": True},
        "t_review": {"type": "number", "nullable": True}, "t_ng": {"type": "number", "nullable": True}}},
    "Model": {"type": "object", "properties": {
        "name": {"type": "string"}, "production": {"type": "integer", "nullable": True},
        "versions": {"type": "array", "items": _ref("VersionSummary")},
        "history": {"type": "array", "items": {"type": "object"}}}},
    "VersionDetail": {"type": "object", "properties": {
        "name": {"type": "string"}, "version": {"type": "integer"}, "production": {"type": "boolean"},
        "detector": {"type": "string"}, "calibration": {"type": "object", "nullable": True},
        "metrics": {"type": "object", "nullable": True}, "manifest": {"type": "object"}}},
    "ProductionMark": {"type": "object", "properties": {
        "name": {"type": "string"}, "production": {"type": "integer"},
        "previous": {"type": "integer", "nullable": True},
        "gate": {"type": "object", "description": "the promotion gate's figures (service.gates)"},
        "forced": {"type": "boolean"}}},
    "Job": {"type": "object", "properties": {
        "job_id": {"type": "string"}, "model": {"type": "string"}, "detector": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
        "stage": {"type": "string"}, "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "message": {"type": "string", "nullable": True}, "error_code": {"type": "string", "nullable": True},
        "version": {"type": "integer", "nullable": True}, "status_url": {"type": "string"}}},
    "InspectionList": {"type": "object", "properties": {
        "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"},
        "items": {"type": "array", "items": _ref("Inspection")}}},
    "Feedback": {"type": "object", "properties": {
        "id": {"type": "integer"}, "inspection_id": {"type": "string"},
        "kind": {"type": "string", "enum": ["false_alarm", "miss", "confirmed"]},
        "note": {"type": "string", "nullable": True},
        "created_at": {"type": "string", "format": "date-time"}, "client": {"type": "string"}}},
    "FeedbackRequest": {"type": "object", "required": ["kind"], "properties": {
        "kind": {"type": "string", "enum": ["false_alarm", "miss", "confirmed"],
                 "description": "false_alarm: rejected but good; miss: passed but defective; confirmed: rejected "
                                "and defective (misses and confirmed rejects are the promotion gate's regression "
                                "set)"},
        "note": {"type": "string", "maxLength": 2000}}},
    "YieldDay": {"type": "object", "properties": {
        "model": {"type": "string"}, "day": {"type": "string", "format": "date"}, "total": {"type": "integer"},
        "good": {"type": "integer"}, "review": {"type": "integer"}, "ng": {"type": "integer"},
        "alignment_failed": {"type": "integer"},
        "first_pass_yield": {"type": "number", "nullable": True, "description": "GOOD / total"},
        "false_alarms": {"type": "integer"}, "misses": {"type": "integer"}}},
}

_SCORE_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"},
        "part_id": {"type": "string", "maxLength": 128}, "version": {"type": "integer", "minimum": 1},
        "return_map": {"type": "boolean"}, "return_overlay": {"type": "boolean"}}}},
    **{t: {"schema": {"type": "string", "format": "binary"}}
       for t in ("image/png", "image/jpeg", "image/bmp", "image/tiff", "application/octet-stream")},
}}


def _paths() -> dict[str, Any]:
    return {
        "/models": {"get": {"summary": "List models and their versions", "operationId": "listModels",
                            "responses": {"200": _json({"type": "object", "properties": {
                                "models": {"type": "array", "items": _ref("Model")}}}, "Models"),
                                **_errors(401, 403)}}},
        "/models/{name}": {"get": {"summary": "One model: versions and production history", "operationId": "getModel",
                                   "parameters": [_NAME],
                                   "responses": {"200": _json(_ref("Model"), "The model"),
                                                 **_errors(401, 403, 404, 409)}}},
        "/models/{name}/versions/{version}": {"get": {
            "summary": "One version's manifest, calibration and metrics", "operationId": "getVersion",
            "parameters": [_NAME, _VERSION],
            "responses": {"200": _json(_ref("VersionDetail"), "The version"), **_errors(401, 403, 404, 409)}}},
        "/models/{name}/versions": {"post": {
            "summary": "Start training a new version from good images (background job)",
            "operationId": "trainVersion", "parameters": [_NAME],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["images"], "properties": {
                    "images": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 2},
                    "detector": {"type": "string", "description": "default: patchcore; 'auto' onboards: the job "
                                                                   "chooses the model and input (at least 4 images); "
                                                                   "'add' teaches the model's production version "
                                                                   "these goods (a new version, the first goods not "
                                                                   "refitted)"},
                    "params": {"type": "string", "description": "detector parameters as a JSON object"},
                    "target_frr": {"type": "number", "minimum": 0, "maximum": 0.5, "exclusiveMinimum": True,
                                   "exclusiveMaximum": True, "description": "wanted share of good parts judged NG"},
                    "review_rate": {"type": "number", "minimum": 0, "maximum": 0.5,
                                    "description": "wanted share of good parts sent to REVIEW (default 3 x target_frr)"},
                    "pixel_rate": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMinimum": True,
                                   "exclusiveMaximum": True,
                                   "description": "wanted share of good parts showing a region"},
                    "pixel_size_mm": {"type": "number", "minimum": 0, "exclusiveMinimum": True,
                                      "description": "side of one image pixel in mm (region measures)"},
                    "grading": {"type": "string", "description": "region grading rules as a JSON object"},
                    "max_images": {"type": "integer", "minimum": 2,
                                   "description": "train on at most this many of the images (a seeded choice)"},
                    "seed": {"type": "integer", "minimum": 0},
                    "n_folds": {"type": "integer", "minimum": 2, "maximum": 20,
                                "description": "cross-fitting folds the thresholds come from (default 5)"},
                    "detection": {"type": "boolean",
                                  "description": "estimate detection on synthetic defects (default true)"},
                    "promote": {"type": "boolean", "description": "put in production when done"},
                    "use_feedback": {"type": "boolean",
                                     "description": "add archived images of parts marked as false alarms"}}}}}},
            "responses": {"202": _json(_ref("Job"), "Job started; poll its status_url"),
                          **_errors(400, 401, 403, 413, 415)}}},
        "/models/{name}/promote": {"post": {
            "summary": "Put a version in production through its promotion gate (409 gate_failed: it misses a "
                       "confirmed defective part or breaks its false-reject target)",
            "operationId": "promote", "parameters": [_NAME],
            "requestBody": {"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["version"],
                "properties": {"version": {"type": "integer", "minimum": 1},
                               "force": {"type": "boolean", "description": "promote past a failed gate "
                                                                           "(recorded)"}}}}}},
            "responses": {"200": _json(_ref("ProductionMark"), "Promoted"), **_errors(400, 401, 403, 404, 409, 415)}}},
        "/models/{name}/drift": {"get": {
            "summary": "Whether the good parts drift from the calibration (two CUSUM tests, anomaly.drift)",
            "operationId": "getDrift",
            "parameters": [_NAME, {"name": "version", "in": "query", "schema": {"type": "integer", "minimum": 1},
                                   "description": "default: the production version"}],
            "responses": {"200": _json({"type": "object"}, "The tests' state, the last parts' figures and the "
                                                            "calibration's"), **_errors(401, 403, 404, 409)}}},
        "/models/{name}/drift/reset": {"post": {
            "summary": "Clear a version's drift alarm once its cause is fixed", "operationId": "resetDrift",
            "parameters": [_NAME],
            "requestBody": {"required": False, "content": {JSON: {"schema": {"type": "object", "properties": {
                "version": {"type": "integer", "minimum": 1, "description": "default: production"}}}}}},
            "responses": {"200": _json({"type": "object"}, "Reset"), **_errors(401, 403, 404, 409)}}},
        "/models/{name}/rollback": {"post": {
            "summary": "Return production to the previous version", "operationId": "rollback", "parameters": [_NAME],
            "responses": {"200": _json(_ref("ProductionMark"), "Rolled back"), **_errors(401, 403, 404, 409)}}},
        "/models/{name}/thresholds": {"post": {
            "summary": "Move thresholds without retraining (writes a new version)", "operationId": "moveThresholds",
            "parameters": [_NAME],
            "requestBody": {"required": True, "content": {JSON: {"schema": {"type": "object", "properties": {
                "version": {"type": "integer", "minimum": 1, "description": "source version; default production"},
                "t_ng": {"type": "number"}, "t_review": {"type": "number"},
                "target_frr": {"type": "number", "minimum": 0, "maximum": 1},
                "review_rate": {"type": "number", "minimum": 0, "maximum": 1},
                "pixel_threshold": {"type": "number"}, "pixel_rate": {"type": "number", "minimum": 0, "maximum": 1},
                "grading": {"type": "object"}, "promote": {"type": "boolean"},
                "reason": {"type": "string", "maxLength": 500}}}}}},
            "responses": {"201": _json({"type": "object", "properties": {
                "name": {"type": "string"}, "version": {"type": "integer"}, "from_version": {"type": "integer"},
                "production": {"type": "integer", "nullable": True}, "thresholds": _ref("Thresholds")}},
                "New version written"), **_errors(400, 401, 403, 404, 409, 415)}}},
        "/models/{name}/score": {"post": {
            "summary": "Judge one part", "operationId": "score", "parameters": [_NAME, *_SCORE_OPTIONS],
            "description": "Send the image as multipart/form-data (field `image`, options as fields or query "
                           "arguments) or as a raw body (`Content-Type: image/png`, ..., options as query "
                           "arguments). Every answered verdict is recorded; its id is `inspection_id`.",
            "requestBody": _SCORE_BODY,
            "responses": {"200": _json(_ref("Inspection"), "The verdict (recorded)"),
                          "409": _json({"oneOf": [_ref("AlignmentFailed"), _ref("Error")]},
                                       "Alignment failed (recorded, verdict ALIGNMENT_FAILED) or model not ready"),
                          **_errors(400, 401, 403, 404, 413, 415, 503)}}},
        "/models/{name}/score-batch": {"post": {
            "summary": "Judge several parts in one request", "operationId": "scoreBatch",
            "parameters": [_NAME, *_SCORE_OPTIONS[1:]],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["images"], "properties": {
                    "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "part_id": {"type": "array", "items": {"type": "string", "maxLength": 128},
                                "description": "one per image, in order"}}}}}},
            "responses": {"200": _json(_ref("Batch"), "Verdicts (all recorded)"),
                          **_errors(400, 401, 403, 404, 409, 413, 415, 503)}}},
        "/models/{name}/score-jobs": {"post": {
            "summary": "Queue a scoring job: many parts judged and recorded by a job worker",
            "operationId": "scoreJob", "parameters": [_NAME],
            "description": "Every image is checked before the job is queued; the job records each part under the "
                           "job's id as batch id (`GET /inspections?batch_id=...`), with its MQTT message, and ends "
                           "with the counts by verdict in its message.",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["images"], "properties": {
                    "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "part_id": {"type": "array", "items": {"type": "string", "maxLength": 128},
                                "description": "one per image, in order"},
                    "version": {"type": "integer", "minimum": 1, "description": "default: production"}}}}}},
            "responses": {"202": _json(_ref("Job"), "The queued job (poll `status_url`)"),
                          **_errors(400, 401, 403, 404, 413, 415, 429, 503)}}},
        "/detectors": {"get": {"summary": "Detectors a model can be trained with", "operationId": "listDetectors",
                               "responses": {"200": _json({"type": "object"}, "Detector names"),
                                             **_errors(401, 403)}}},
        "/jobs": {"get": {"summary": "Recent training jobs", "operationId": "listJobs",
                          "parameters": [_query("model", {"type": "string"}, "Model name"),
                                         _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "")],
                          "responses": {"200": _json({"type": "object", "properties": {
                              "jobs": {"type": "array", "items": _ref("Job")}}}, "Jobs"), **_errors(400, 401, 403)}}},
        "/jobs/{job_id}": {"get": {"summary": "A training job's status and progress", "operationId": "getJob",
                                   "parameters": [{"name": "job_id", "in": "path", "required": True,
                                                   "schema": {"type": "string"}}],
                                   "responses": {"200": _json(_ref("Job"), "The job"), **_errors(401, 403, 404)}}},
        "/inspections": {"get": {"summary": "Query inspection records", "operationId": "listInspections",
                                 "parameters": _RECORD_FILTERS,
                                 "responses": {"200": _json(_ref("InspectionList"), "Records, newest first"),
                                               **_errors(400, 401, 403)}}},
        "/inspections/{inspection_id}": {"get": {
            "summary": "One inspection record with its feedback", "operationId": "getInspection", "parameters": [_ID],
            "responses": {"200": _json(_ref("Inspection"), "The record"), **_errors(401, 403, 404)}}},
        "/inspections/{inspection_id}/{kind}": {"get": {
            "summary": "An archived file of an inspection", "operationId": "getInspectionFile",
            "parameters": [_ID, {"name": "kind", "in": "path", "required": True,
                                 "schema": {"type": "string", "enum": ["image", "map", "overlay", "thumbnail"]}}],
            "responses": {"200": {"description": "The file", "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                **_errors(401, 403, 404)}}},
        "/inspections/{inspection_id}/feedback": {"post": {
            "summary": "Mark an inspection as a false alarm or a miss", "operationId": "addFeedback",
            "parameters": [_ID],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("FeedbackRequest")}}},
            "responses": {"201": _json(_ref("Feedback"), "Feedback stored"),
                          **_errors(400, 401, 403, 404, 409, 415)}}},
        "/yield": {"get": {"summary": "First-pass yield per model per UTC day", "operationId": "getYield",
                           "parameters": [_query("model", {"type": "string"}, "Model name"), *_RECORD_FILTERS[4:6]],
                           "responses": {"200": _json({"type": "object", "properties": {
                               "days": {"type": "array", "items": _ref("YieldDay")}}}, "Yield per day"),
                               **_errors(400, 401, 403)}}},
        "/whoami": {"get": {"summary": "The caller's key name and role", "operationId": "whoami",
                            "responses": {"200": _json({"type": "object"}, "The caller"), **_errors(401)}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "security": [],
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI document")}}},
    }


def build_document(*, server_url: str = "") -> dict[str, Any]:
    """The OpenAPI document (paths relative to ``<server_url>/api/v1``)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Anomaly inspection service",
            "version": __version__,
            "description": (
                "Judge parts with models learned from good images only. Every error is JSON "
                "`{\"code\", \"message\"}`. Keys: `Authorization: Bearer <key>` or `X-API-Key`; "
                "required unless the server binds to loopback only. Role `score` scores and reads; "
                "role `admin` also trains, promotes, rolls back and gives feedback."),
        },
        "servers": [{"url": f"{server_url}/api/v1"}],
        "security": [{"bearer": []}, {"apiKey": []}, {}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": _SCHEMAS,
        },
        "paths": _paths(),
    }
