"""Routes whose endpoint takes only the request, answered without FastAPI's request handler.

FastAPI answers a route through a request handler that solves the endpoint's dependencies,
reads and validates its parameters and serializes what it returns. The edge's API
endpoints take only the `Request` and return a `Response`: they read and check their
bodies themselves, to answer in the API's own error format. For them that handler does
nothing but cost (~5% of a request's CPU in the edge, by `make bench`'s profile), so a
`DirectRoute` calls such an endpoint directly; any other endpoint keeps FastAPI's handler.
The route's OpenAPI description is unchanged: FastAPI builds it from the route, not from
its handler.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class DirectRoute(APIRoute):
    """An `APIRoute` that calls an `async (request: Request) -> Response` endpoint directly."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if self.dependant.dependencies or not takes_only_the_request(self.endpoint):
            return super().get_route_handler()
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler


def takes_only_the_request(endpoint: Callable[..., Any]) -> bool:
    """Whether `endpoint` is a coroutine function of one `Request` returning a `Response`."""
    if not inspect.iscoroutinefunction(endpoint):
        return False
    try:
        hints = typing.get_type_hints(endpoint)
    except (NameError, TypeError):  # an annotation that does not resolve: not ours to judge
        return False
    parameters = list(inspect.signature(endpoint).parameters.values())
    returns = hints.get("return")
    return (
        len(parameters) == 1
        and parameters[0].kind
        in (parameters[0].POSITIONAL_ONLY, parameters[0].POSITIONAL_OR_KEYWORD)
        and hints.get(parameters[0].name) is Request
        and isinstance(returns, type)
        and issubclass(returns, Response)
    )
