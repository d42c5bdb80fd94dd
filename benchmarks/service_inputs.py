"""Hostile input against a real server with its records in PostgreSQL: no 5xx, and records = answers.

    python benchmarks/service_inputs.py [--uploads 1000] [--fields 500] [--seed 0]
        [--db-url postgresql://root@127.0.0.1:5432/test] [--json benchmarks/results/service_hostile/inputs.json]

``anomaly serve`` (2 workers) with a small generated model, its records in a schema of their own
(dropped afterwards). Then, on loopback only, bounded by count:

* ``uploads`` scoring requests with broken or hostile images: bit flips, truncations, random
  bytes, empty bodies, headers that claim huge sizes, 1 x 1 and 10000 x 1 images, 2- and
  5-channel TIFFs, a gray image for a colour model, wrong content types, control characters in
  the part id; a fifth are good parts, as the line sends them;
* ``fields`` URL and field cases: NUL and other control characters, 10 kB strings, SQL and path
  fragments, bad numbers and dates in every records filter, model names, feedback notes and
  threshold moves.

Counted: answers by status, server errors (5xx), connection failures, and the records stored
against the scoring requests answered 2xx; every stored record is checked to carry no control
character and an image size the model accepts.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anomaly.accepted_input import SIDE_FACTOR, AcceptedInput  # noqa: E402
from anomaly.bench.provenance import run_provenance  # noqa: E402
from anomaly.imageio import encode_png  # noqa: E402
from anomaly.store import ModelStore  # noqa: E402
from service_load import free_port  # noqa: E402
from report import save_result  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)
from service.testing import build_store, make_part  # noqa: E402

ANOMALY = [sys.executable, "-m", "anomaly.cli.main"]
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _tiff(channels: int, rng: np.random.Generator) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rng.integers(0, 255, (96, 96, channels), dtype=np.uint8), photometric="minisblack",
                     planarconfig="contig")
    return buffer.getvalue()


def hostile_uploads(n: int, rng: np.random.Generator) -> list[tuple[str, bytes, str | None]]:
    """``n`` (content type, body, part id) scoring requests, a fifth of them good parts."""
    good = [encode_png(make_part(rng)) for _ in range(8)]
    jpeg = __import__("cv2").imencode(".jpg", make_part(rng))[1].tobytes()

    def flipped(data: bytes) -> bytes:
        raw = bytearray(data)
        for i in rng.integers(0, len(raw), int(rng.integers(1, 40))):
            raw[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(raw)

    huge_header = good[0][:16] + (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big") + good[0][24:]
    makers = [
        lambda: ("image/png", flipped(random.choice(good)), None),
        lambda: ("image/png", random.choice(good)[: int(rng.integers(0, len(good[0])))], None),
        lambda: ("image/jpeg", flipped(jpeg), None),
        lambda: ("image/jpeg", jpeg[: int(rng.integers(0, len(jpeg)))], None),
        lambda: ("application/octet-stream", rng.bytes(int(rng.integers(1, 5000))), None),
        lambda: ("image/png", b"", None),
        lambda: ("image/png", huge_header, None),
        lambda: ("image/png", encode_png(np.zeros((1, 1, 3), np.uint8)), None),
        lambda: ("image/png", encode_png(np.zeros((1, 10000, 3), np.uint8)), None),
        lambda: ("image/png", encode_png(make_part(rng)[..., 0]), None),
        lambda: ("image/tiff", _tiff(2, rng), None),
        lambda: ("image/tiff", _tiff(5, rng), None),
        lambda: ("text/plain", random.choice(good), None),
        lambda: ("application/json", b'{"image": "x"}', None),
        lambda: ("image/png", random.choice(good), "line\x00" + "a" * int(rng.integers(0, 200))),
        lambda: ("image/png", random.choice(good), "x" * 129),
    ]
    out = []
    for i in range(n):
        if i % 5 == 0:
            out.append(("image/png", random.choice(good), f"good-{i}"))
        else:
            out.append(makers[i % len(makers)]())
    return out


def hostile_fields(n: int, rng: np.random.Generator) -> list[tuple[str, str, dict | None]]:
    """``n`` (method, path with query, JSON body) cases on the records, jobs, models and feedback."""
    nasty = ["\x00", "a\x00b", "\x1b[31m", "\x7f", "%", "'; DROP TABLE inspections; --", "../../etc/passwd",
             "x" * 10_000, "😀", "\u202e", "-1", "1e309", "NaN", "2026-13-45", "9" * 30, "", " ", "null"]
    out = []
    for i in range(n):
        value = random.choice(nasty) + (random.choice(nasty) if i % 3 == 0 else "")
        q = urllib.parse.quote(value, safe="")
        kind = i % 10
        if kind < 4:
            key = random.choice(["model", "version", "verdict", "part_id", "since", "until", "rejected", "feedback",
                                 "limit", "offset"])
            out.append(("GET", f"/api/v1/inspections?{key}={q}", None))
        elif kind == 4:
            out.append(("GET", f"/api/v1/yield?{random.choice(['model', 'since', 'until'])}={q}", None))
        elif kind == 5:
            out.append(("GET", f"/api/v1/jobs?model={q}&limit={q}", None))
        elif kind == 6:
            out.append(("GET", f"/api/v1/models/{q}", None))
        elif kind == 7:
            out.append(("POST", "/api/v1/models/tiny/thresholds",
                        {random.choice(["t_ng", "t_review", "target_frr", "pixel_rate", "reason"]): value}))
        elif kind == 8:
            out.append(("POST", f"/api/v1/inspections/{q}/feedback", {"kind": "false_alarm", "note": value}))
        else:
            out.append(("GET", f"/records?model={q}&page={q}", None))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--fields", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "service_hostile" / "inputs.json")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    random.seed(args.seed)
    import sqlalchemy as sa

    from service.db import normalize_url

    schema = f"anomaly_inputs_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(normalize_url(args.db_url))
    doc: dict = {"command": ("python benchmarks/service_inputs.py " + " ".join(sys.argv[1:])).strip(),
                 "provenance": run_provenance(), "database": engine.dialect.name, "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="anomaly-inputs-") as tmp:
        store = Path(tmp) / "store"
        build_store(store, "tiny", [make_part(rng) for _ in range(8)])
        accepted = AcceptedInput.from_dict(ModelStore(store).manifest("tiny", 1)["training_data"]["accepted_input"])
        port = free_port()
        server = subprocess.Popen([*ANOMALY, "serve", "--store", str(store), "--port", str(port), "--db-url", args.db_url,
                                   "--db-schema", schema, "--instance", str(Path(tmp) / "instance")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        statuses: dict[str, Counter] = {"uploads": Counter(), "fields": Counter()}
        failures = Counter()
        scored_2xx = 0
        try:
            for _ in range(120):
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    connection.request("GET", "/readyz")
                    if connection.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(1)

            def send(method: str, path: str, body: bytes | None, headers: dict) -> int | None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    connection.request(method, path, body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    return response.status
                except (OSError, http.client.HTTPException) as exc:
                    failures[type(exc).__name__] += 1
                    return None
                finally:
                    connection.close()

            start = time.perf_counter()
            for content_type, body, part_id in hostile_uploads(args.uploads, rng):
                query = f"?part_id={urllib.parse.quote(part_id, safe='')}" if part_id is not None else ""
                status = send("POST", "/api/v1/models/tiny/score" + query, body, {"Content-Type": content_type})
                statuses["uploads"][str(status)] += 1
                scored_2xx += status is not None and 200 <= status < 300
            for method, path, payload in hostile_fields(args.fields, rng):
                body = json.dumps(payload).encode() if payload is not None else None
                headers = {"Content-Type": "application/json"} if payload is not None else {"Accept": "application/json"}
                statuses["fields"][str(send(method, path, body, headers))] += 1
            doc["seconds"] = round(time.perf_counter() - start, 1)
        finally:
            server.terminate()
            server.wait(timeout=30)
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f'SELECT part_id, image_width, image_height FROM "{schema}".inspections')).all()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    def accepted_side(side: int, trained: tuple[int, int]) -> bool:
        return trained[0] / SIDE_FACTOR <= side <= trained[1] * SIDE_FACTOR

    junk = [r for r in rows if (r.part_id and CONTROL.search(r.part_id))
            or not accepted_side(r.image_width, accepted.width) or not accepted_side(r.image_height, accepted.height)]
    server_errors = sum(c for counter in statuses.values() for s, c in counter.items() if s.startswith("5"))
    doc.update({
        "uploads": args.uploads, "fields": args.fields,
        "statuses": {k: dict(sorted(v.items())) for k, v in statuses.items()},
        "server_errors": server_errors, "connection_failures": dict(failures),
        "scoring_2xx": scored_2xx, "records": len(rows), "junk_records": len(junk),
    })
    print(json.dumps({k: v for k, v in doc.items() if k != "provenance"}, indent=2))
    save_result(doc, args.json)
    return 0 if server_errors == 0 and not failures and len(rows) == scored_2xx and not junk else 1


if __name__ == "__main__":
    raise SystemExit(main())
