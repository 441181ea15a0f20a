"""What one HTTP client may hold: a request body of at most so many bytes, and a connection
for at most so many seconds while its request is still arriving.

Without these a client can send a body of any size (it is read whole, and a 422 would echo
it back) or open connections and never finish a request (each holds a socket forever).
"""

import asyncio
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol


class BodyLimit:
    """ASGI middleware: a request whose body is over `max_bytes` gets 413, read no further.

    A declared `Content-Length` over the limit is refused before any of the body is read; a
    chunked body is counted as it arrives and refused at the chunk that crosses the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body over {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        too_large = HTTPException(413, detail)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes an HTTPException raised while reading the body through to
                    # the exception handlers: a JSON 413.
                    raise too_large
            return message

        await self.app(scope, counted, send)


def with_request_timeout(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing a connection whose request has not fully arrived
    `seconds` after the connection opened or its previous response was sent.

    uvicorn itself bounds only the idle time between requests (`--timeout-keep-alive`); a
    client that sends half a request line, headers or body would keep its connection forever.
    A request that arrived whole is never cut off, however long the app takes to answer.
    """

    class RequestTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        request_timeout = seconds
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def arm(self) -> None:
            self.disarm()
            self.deadline = self.loop.call_later(self.request_timeout, self.expire)

        def disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def expire(self) -> None:
            self.deadline = None
            cycle = self.cycle
            # No request begun since the last response (or ever), or its body still arriving.
            arriving = cycle is None or cycle.response_complete or cycle.more_body
            if arriving and not self.transport.is_closing():
                self.transport.close()

    return RequestTimeoutProtocol
