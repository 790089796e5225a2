"""`GET /admin/v1/usage`: usage summed over a time range, grouped and filtered (admin keys
only). See `query` for the parameters and the answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from switchyard.edge.admin import admin_key
from switchyard.edge.admin import router as admin_router
from switchyard.edge.errors import OpenAIError
from switchyard.edge.state import EdgeState
from switchyard.edge.usage.query import FILTERS, GROUP_FIELDS, parse_query, summarize, to_csv
from switchyard.edge.usage.store import UsageStoreUnavailable


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/ErrorResponse"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _parameter(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


# Documented here, parsed by `query` after the key is checked (a normal key learns nothing).
_PARAMETERS = [
    _parameter(
        "start",
        "ISO 8601 date or time (UTC unless an offset is given); default: 24 hours before end",
    ),
    _parameter("end", "ISO 8601 date or time, exclusive; default: now"),
    _parameter(
        "group_by", f"Comma-separated, any of: {', '.join(GROUP_FIELDS)}; default: tenant,key"
    ),
    *(_parameter(name, f"Only these {name}s (comma-separated)") for name in FILTERS),
    _parameter("format", "json (default) or csv", enum=["json", "csv"]),
]


def router(clock: Callable[[], float] = time.time) -> APIRouter:
    """The usage route; `clock` (epoch seconds) is what "now" is for defaults and retention."""
    routes = admin_router()

    @routes.get(
        "/usage",
        openapi_extra={"security": [{"bearer": []}], "parameters": _PARAMETERS},
        responses={
            200: {
                "description": "Usage per group and its totals (JSON), or the groups as CSV",
                "content": {"application/json": {}, "text/csv": {}},
            },
            400: _error("A bad parameter"),
            401: _error("No or unknown API key"),
            403: _error("Not an admin key"),
            503: _error("The usage store cannot be read now"),
        },
    )
    async def usage(request: Request) -> Response:
        """Requests and tokens per tenant, key, model, API, hour, status class or cached
        flag (`group_by`), over `start`..`end` (default: the last 24 hours)."""
        edge: EdgeState = request.app.state.edge
        admin_key(edge.keys, request)  # before anything about the query is said
        params = {name: request.query_params.getlist(name) for name in request.query_params}
        store = edge.usage.store
        query = parse_query(params, clock(), store.retention_hours)
        try:
            rows = await store.rows(query.first_hour, query.end_hour)
        except UsageStoreUnavailable:
            raise OpenAIError.unavailable(
                "The usage store cannot be read now; try again.", edge.settings.retry_after_s
            ) from None
        answer = summarize(query, rows)
        if query.format == "csv":
            return Response(to_csv(answer), media_type="text/csv; charset=utf-8")
        return Response(orjson.dumps(answer), media_type="application/json")

    return routes
