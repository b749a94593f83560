"""A small upstream for proxy tests, run as a real process: `python -m tests.support.echo_app PORT`
(PORT 0: it binds one of its own and logs it, as uvicorn's "Uvicorn running on" line).

It stands in for "some upstream" where the real apps cannot show what the proxy did:
- any path: answers JSON describing the request it received (method, path, query, headers,
  body length), so tests can see exactly what the proxy forwarded;
- `/_echo/status/{code}`: answers that status;
- `/_echo/slow?seconds=&only=NAME`: answers after a delay (only upstream NAME, if given);
- `/_echo/drip?chunks=&interval=`: streams chunks slowly and counts clients that went away;
- `/_echo/big?bytes=`: a large streamed body;
- `/_echo/late?key=&only=NAME`: like a copy the relay has not reached yet: 404 the first time
  a key is asked (only upstream NAME, if given), then `{"key": key}` as every other upstream;
- `/_echo/hop`: a response carrying hop-by-hop headers the proxy must strip;
- `/_echo/stats`: counters (complete requests echoed, drips abandoned).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

STATS = {"requests": 0, "drips_abandoned": 0, "drips_finished": 0}
LATE_KEYS_SEEN: set[str] = set()


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    return JSONResponse({"status": code}, status_code=code)


async def slow(request: Request) -> Response:
    only = request.query_params.get("only")
    if only is None or only == request.app.state.name:
        await asyncio.sleep(float(request.query_params.get("seconds", "1")))
    return JSONResponse({"who": request.app.state.name})


async def late(request: Request) -> Response:
    key = request.query_params.get("key", "")
    only = request.query_params.get("only")
    if (only is None or only == request.app.state.name) and key not in LATE_KEYS_SEEN:
        LATE_KEYS_SEEN.add(key)
        return JSONResponse({"detail": f"no {key} yet"}, status_code=404)
    return JSONResponse({"key": key})


async def drip(request: Request) -> Response:
    chunks = int(request.query_params.get("chunks", "50"))
    interval = float(request.query_params.get("interval", "0.1"))

    async def body() -> AsyncIterator[bytes]:
        try:
            for n in range(chunks):
                yield f"chunk {n}\n".encode()
                await asyncio.sleep(interval)
            STATS["drips_finished"] += 1
        except (asyncio.CancelledError, OSError):
            STATS["drips_abandoned"] += 1
            raise

    return StreamingResponse(body(), media_type="text/plain")


async def big(request: Request) -> Response:
    size = int(request.query_params.get("bytes", "1000000"))

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            part = min(65536, size - sent)
            yield b"x" * part
            sent += part

    return StreamingResponse(body(), media_type="application/octet-stream")


async def hop(request: Request) -> Response:
    return Response(
        b"ok",
        headers={
            "Connection": "x-upstream-secret",
            "X-Upstream-Secret": "1",
            "Keep-Alive": "timeout=5",
            "Proxy-Authenticate": "Basic",
            "X-Strangler-Upstream": "forged",
            "X-Kept": "yes",
        },
    )


async def stats(request: Request) -> Response:
    return JSONResponse(STATS)


async def echo(request: Request) -> Response:
    body = await request.body()  # a request cut off mid-body raises here and is not counted
    STATS["requests"] += 1
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
            "query": request.url.query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
            "body_length": len(body),
            "who": request.app.state.name,
        }
    )


def create_app(name: str) -> Starlette:
    app = Starlette(
        routes=[
            Route("/_echo/status/{code:int}", status, methods=["GET", "POST"]),
            Route("/_echo/slow", slow, methods=["GET", "POST"]),
            Route("/_echo/late", late),
            Route("/_echo/drip", drip),
            Route("/_echo/big", big),
            Route("/_echo/hop", hop),
            Route("/_echo/stats", stats),
            Route(
                "/{path:path}",
                echo,
                methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            ),
        ]
    )
    app.state.name = name
    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    name = sys.argv[2] if len(sys.argv) > 2 else "echo"
    # INFO for uvicorn's start lines, which name its pid and the port it bound; no access log.
    uvicorn.run(create_app(name), host="127.0.0.1", port=port, log_level="info", access_log=False)
