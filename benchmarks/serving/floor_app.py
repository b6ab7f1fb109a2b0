"""The floor: a bare ASGI app that reads the request body and returns a constant.

Served by the project venv's uvicorn with the options modelyard uses::

    uvicorn floor_app:app --workers 1 --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

from typing import Any

BODY = b'{"predictions":[[0.75,0.25]]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
