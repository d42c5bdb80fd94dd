"""``anomaly worker``: take training, onboarding and add-goods jobs off the Redis queue and run them.

Start one or more, on this machine or others that share the model store, the spool folder
and the records database with the web service; the service must be started with the same
``--queue-url`` (``ANOMALY_QUEUE_URL``). Web workers then never train::

    anomaly worker --queue-url redis://127.0.0.1:6379/0 --store /srv/anomaly/models \\
        --db-url postgresql://anomaly@db/anomaly --instance /srv/anomaly/instance

At start it marks failed the jobs whose worker on this machine died, and removes the
staging folders a killed writer left in the store. ``--burst`` stops once the queue is
empty. Settings not given here come from ``<instance>/config.py`` and ``ANOMALY_*``
variables, as for ``anomaly serve``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from anomaly.cli.common import add_store_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run queued training jobs (Redis queue shared with `anomaly serve`)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queue-url", help="Redis URL of the queue (default: $ANOMALY_QUEUE_URL)")
    add_store_option(p)
    p.add_argument("--db-url", help="records database URL, the service's (default: SQLite in the instance folder)")
    p.add_argument("--db-schema", help="PostgreSQL schema of the service's tables")
    p.add_argument("--instance", type=Path, help="instance folder (config.py, database, archive, spool)")
    p.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = {"ANOMALY_QUEUE_URL": args.queue_url, "ANOMALY_DATABASE_URL": args.db_url,
                "ANOMALY_DATABASE_SCHEMA": args.db_schema,
                "ANOMALY_STORE": str(args.store.resolve()) if args.store else None,
                "ANOMALY_INSTANCE_PATH": str(args.instance.resolve()) if args.instance else None,
                # a worker serves no requests: no model preloading, no MQTT publisher of its own
                "ANOMALY_PRELOAD_MODELS": "false", "ANOMALY_MQTT_PUBLISHER": "false"}
    os.environ.update({k: v for k, v in settings.items() if v})
    from service.app import create_app
    from service.queue import work

    return work(create_app(preload=False), burst=args.burst)
