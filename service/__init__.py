"""The HTTP service: a Flask application (JSON API, web pages, records, auth).

``create_app`` is the factory; ``anomaly serve`` runs it under gunicorn.
"""

from service.app import create_app

__all__ = ["create_app"]
