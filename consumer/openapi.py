"""The OpenAPI document of ``/api/v1``, built from the same table that registers the routes."""

from __future__ import annotations

import re
from typing import Any

from runstream import __version__
from runstream.consumer.api import (
    MAX_POINTS_CAP,
    MAX_POINTS_DEFAULT,
    OUTPUT_LINES_CAP,
    OUTPUT_LINES_DEFAULT,
    ROUTES,
)

__all__ = ["openapi_document"]

_EXTRA = (
    ("GET", "/api/v1/runs/{run_id}/events", "A run's live updates (text/event-stream; Last-Event-ID resumes)", ()),
    ("GET", "/api/v1/openapi.json", "This document", ()),
    (
        "GET",
        "/api/v1/health",
        "The pipeline's health: collectors alive, lag, Redis memory, eviction policy, persistence; why degraded",
        (),
    ),
    ("GET", "/api/v1/health/live", "Liveness (no token): {status: up} while the server serves", ()),
    ("GET", "/api/v1/health/ready", "Readiness (no token): 200 while Redis answers, else 503", ()),
)


#: What a state-changing route may answer beside the common replies.
_RESPONSES: dict[str, dict[str, dict[str, str]]] = {
    "POST": {"409": {"description": "The run has ended: there is nothing to cancel"}},
    "PUT": {
        "408": {"description": "The upload stalled (sent nothing for a while); nothing is stored"},
        "413": {"description": "The file is over the server's upload limit; nothing is stored"},
        "503": {"description": "As many uploads as the server takes at once are in progress: retry later"},
    },
}
#: Query parameters that are not free text: counts with their bounds (outside them: 400), steps.
_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "max_points": {"type": "integer", "minimum": 1, "maximum": MAX_POINTS_CAP, "default": MAX_POINTS_DEFAULT},
    "limit": {"type": "integer", "minimum": 1, "maximum": OUTPUT_LINES_CAP, "default": OUTPUT_LINES_DEFAULT},
    "start": {"type": "integer"},
    "end": {"type": "integer"},
}


def openapi_document() -> dict[str, Any]:

    paths: dict[str, dict[str, Any]] = {}
    entries = [(r.method, r.path, r.summary, r.params) for r in ROUTES] + list(_EXTRA)
    for method, path, summary, params in entries:
        openapi_path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)
        path_params = re.findall(r"\{(\w+)\}", openapi_path)
        parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in path_params]
        parameters += [
            {"name": q, "in": "query", "required": False, "schema": _QUERY_SCHEMAS.get(q, {"type": "string"})}
            for q in params
        ]
        paths.setdefault(openapi_path, {})[method.lower()] = {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "A malformed run id, name or query parameter (a count out of its bounds)"},
                "401": {"description": "A bearer token is needed"},
                "403": {"description": "A token of another workspace, or a change sent from another origin"},
                "404": {"description": "No such run, metric or file"},
                **_RESPONSES.get(method, {}),
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "runstream", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"bearer": []}],
        "paths": paths,
    }
