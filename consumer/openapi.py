"""The OpenAPI document of ``/api/v1``, built from the same table that registers the routes."""

from __future__ import annotations

import re
from typing import Any

from runstream import __version__
from runstream.consumer.api import ROUTES

__all__ = ["openapi_document"]

_EXTRA = (
    ("GET", "/api/v1/runs/{run_id}/events", "A run's live updates (text/event-stream; Last-Event-ID resumes)", ()),
    ("GET", "/api/v1/openapi.json", "This document", ()),
    ("GET", "/api/v1/health", "Collectors' counters and the server's SSE figures", ()),
)


def openapi_document() -> dict[str, Any]:

    paths: dict[str, dict[str, Any]] = {}
    entries = [(r.method, r.path, r.summary, r.params) for r in ROUTES] + list(_EXTRA)
    for method, path, summary, params in entries:
        openapi_path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)
        path_params = re.findall(r"\{(\w+)\}", openapi_path)
        parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in path_params]
        parameters += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in params]
        paths.setdefault(openapi_path, {})[method.lower()] = {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK"},
                "401": {"description": "A bearer token is needed"},
                "404": {"description": "No such run, metric or file"},
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "runstream", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"bearer": []}],
        "paths": paths,
    }
