"""`DirectRoute`: an endpoint of the request alone is called without FastAPI's request
handler; every other endpoint keeps it, and the OpenAPI description is the same."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Path
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from switchyard.edge.direct_route import DirectRoute, takes_only_the_request


async def _bare(request: Request) -> Response:
    return JSONResponse({"path": request.url.path, "body": (await request.body()).decode()})


def _app() -> FastAPI:
    app = FastAPI()
    app.router.route_class = DirectRoute
    seen: list[str] = []

    def dependency() -> str:
        seen.append("dependency")
        return "ran"

    app.post("/direct", openapi_extra={"x-check": "kept"})(_bare)

    @app.get("/items/{item}")
    async def item(item: Annotated[int, Path()], request: Request) -> Response:
        return JSONResponse({"item": item})

    @app.get("/depends", dependencies=[Depends(dependency)])
    async def depends(request: Request) -> Response:
        return JSONResponse({"seen": seen})

    @app.get("/plain")
    async def plain() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _route(app: FastAPI, path: str) -> DirectRoute:
    (route,) = [r for r in app.routes if getattr(r, "path", None) == path]
    assert isinstance(route, DirectRoute)
    return route


async def test_only_an_endpoint_of_the_request_alone_is_called_directly() -> None:
    app = _app()
    assert _route(app, "/direct").get_route_handler() is _bare
    for path in ("/items/{item}", "/depends", "/plain"):
        assert _route(app, path).get_route_handler() is not _route(app, path).endpoint

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        direct = await client.post("/direct", content=b"hello")
        assert direct.json() == {"path": "/direct", "body": "hello"}
        assert (await client.get("/items/7")).json() == {"item": 7}  # its parameter, parsed
        assert (await client.get("/items/x")).status_code == 422  # and validated
        assert (await client.get("/depends")).json() == {"seen": ["dependency"]}
        assert (await client.get("/plain")).json() == {"status": "ok"}  # serialized
        schema: dict[str, Any] = (await client.get("/openapi.json")).json()
    assert schema["paths"]["/direct"]["post"]["x-check"] == "kept"
    assert set(schema["paths"]) == {"/direct", "/items/{item}", "/depends", "/plain"}


def test_what_counts_as_an_endpoint_of_the_request_alone() -> None:
    async def two(request: Request, other: int) -> Response:
        return Response()

    async def untyped(request):  # type: ignore[no-untyped-def]
        return Response()

    async def returns_a_dict(request: Request) -> dict[str, str]:
        return {}

    def synchronous(request: Request) -> Response:
        return Response()

    async def keyword_only(*, request: Request) -> Response:
        return Response()

    assert takes_only_the_request(_bare)
    for endpoint in (two, untyped, returns_a_dict, synchronous, keyword_only):
        assert not takes_only_the_request(endpoint), endpoint.__name__
