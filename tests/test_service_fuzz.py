"""Fuzz the API from its own OpenAPI document (schemathesis): no request may get a 5xx answer.

Bounded: a few examples per operation (``ANOMALY_FUZZ_EXAMPLES``, default 10), valid and
invalid ones, against the WSGI app in-process, on SQLite and on PostgreSQL. ``benchmarks/fuzz_api.sh`` runs the same
against a real server with more examples.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install '.[test]')")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from service import create_app  # noqa: E402
from service.testing import make_part, make_test_config, tiny_store  # noqa: E402
from tests.conftest import postgres_schema  # noqa: E402

EXAMPLES = int(os.environ.get("ANOMALY_FUZZ_EXAMPLES", "10"))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fuzz_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    # PostgreSQL too: it refuses what SQLite stores (a NUL in text answered 500 there).
    tmp = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    store: Path = tiny_store(tmp / "store", lambda: [make_part(rng) for _ in range(8)])
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(postgres_schema()) if request.param == "postgresql" else {}
        app = create_app(make_test_config(tmp, store, ARCHIVE="all", MAX_IMAGE_BYTES=256 * 1024,
                                          MAX_UPLOAD_BYTES=2 * 1024 * 1024, **database))
        yield app
        app.extensions["anomaly_jobs"].shutdown(wait=True)
        app.extensions["anomaly_db"].dispose()


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app)


def _operations() -> list[tuple[str, str]]:
    from service.openapi import build_document

    return [(method.upper(), path) for path, ops in build_document()["paths"].items() for method in ops]


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_request_gets_a_server_error(api_schema, method: str, path: str, mode: str) -> None:
    from hypothesis import given
    from schemathesis.generation.modes import GenerationMode

    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        case.call_and_validate(checks=[not_a_server_error])

    try:
        run()
    except Unsatisfiable:
        if mode == "positive":
            raise
        # nothing in this operation can be made invalid (no parameters, no body)
