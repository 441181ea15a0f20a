"""What one HTTP client may hold: a request body of at most so many bytes and JSON values, a
header section of at most so many bytes, a connection for at most so many seconds while its
request is still arriving or its answers go unread, and one request parsed ahead at a time.

Without these a client can send a body of any size (it is read whole, and a 422 would echo it
back) or of absurd structure (each unknown key one more validation error), a header section
of any size (httptools buffers it whole, and concatenates it piece by piece), open connections
and never finish a request (each holds a socket forever), or pipeline requests without reading
the answers (each parsed request and each unsent answer held in memory).
"""

import asyncio
import json
import logging
from typing import Any, cast

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..settings import get_settings

logger = logging.getLogger("uvicorn.error")  # where uvicorn reports the requests it refuses

# What the parser is fed at a time: a client that pipelines thousands of requests in one write
# has at most this much parsed ahead (a request line takes 18 bytes), the rest as they are served.
SLICE = 4096
# The characters that open a JSON value or separate members and elements: a body has at most
# about as many values as it has of these (strings holding them count too).
JSON_STRUCTURE = (b",", b":", b"[", b"{")
JSON_TYPES = (b"application/json", b"application/problem+json")


def is_json(scope: Scope) -> bool:
    """Whether FastAPI would parse the body as JSON: no content type, or a JSON one."""
    kind = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
    media = kind.partition(b";")[0].strip().lower()
    return not media or media in JSON_TYPES or media.endswith(b"+json")


class BodyLimit:
    """ASGI middleware: a request whose body is over `max_bytes`, or whose JSON body has more
    than `max_json_values` values, gets 413 and is read no further.

    A declared `Content-Length` over the limit is refused before any of the body is read; a
    chunked body is counted as it arrives and refused at the chunk that crosses the limit.
    The JSON values are counted as their separators arrive (`bytes.count`, no parsing): an
    absurd body is refused before it is parsed or validated.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_values: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_values = max_json_values

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body over {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        json_body = is_json(scope)
        received = values = 0

        async def counted() -> Message:
            nonlocal received, values
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                # FastAPI passes an HTTPException raised while reading the body through to
                # the exception handlers: a JSON 413.
                if received > self.max_bytes:
                    raise HTTPException(413, detail)
                if json_body:
                    values += sum(body.count(separator) for separator in JSON_STRUCTURE)
                    if values > self.max_json_values:
                        raise HTTPException(
                            413, f"request body over {self.max_json_values} JSON values"
                        )
            return message

        await self.app(scope, counted, send)


class HeldFlow(FlowControl):
    """uvicorn's flow control, except that reading stays paused while the connection holds
    work its client sent ahead: a request waiting its turn, bytes not parsed yet, or answers
    the client is not reading (uvicorn resumes reading after every answer)."""

    def __init__(self, transport: asyncio.Transport, protocol: "LimitedHttpProtocol") -> None:
        super().__init__(transport)
        self.protocol = protocol

    def resume_reading(self) -> None:
        if not self.protocol.holding():
            super().resume_reading()


def too_large_response(max_header_bytes: int) -> tuple[bytes, bytes]:
    """The 431 answer's JSON body and its head (status line, headers, blank line)."""
    body = json.dumps({"detail": f"request header fields over {max_header_bytes} bytes"})
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return body.encode(), head.encode()


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits of `limited_protocol()`."""

    request_timeout = 20.0
    max_header_bytes = 32 * 1024

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.flow = HeldFlow(transport, self)
        self.unparsed = b""  # received, not yet fed to the parser, from `self.offset` on
        self.offset = 0
        self.messages = 0  # requests begun on this connection
        self.header_arriving = False  # a request's header section is arriving
        self.header_bytes = 0  # its URL and header fields so far
        self.header_streamed = 0  # pieces of it that held nothing else
        self.refused = False  # its header section was too large: 431, then close
        self.deadline: asyncio.TimerHandle | None = None  # for the request to arrive
        self.unread: asyncio.TimerHandle | None = None  # for the client to read an answer
        self.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self.unread is not None:
            self.unread.cancel()
        self.unparsed = b""
        super().connection_lost(exc)

    def holding(self) -> bool:
        """Whether reading must wait: see HeldFlow (and uvicorn's own reason, a body not yet
        read by the app that is over its high-water mark)."""
        unread_body = self.cycle is not None and len(self.cycle.body) > HIGH_WATER_LIMIT
        return bool(
            self.pipeline or self.unparsed or self.flow.write_paused or self.refused or unread_body
        )

    # Parsing, a slice at a time, never ahead of a request that waits its turn.

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.unparsed = self.unparsed[self.offset :] + data if self.unparsed else data
        self.offset = 0
        self.parse()

    def parse(self) -> None:
        while self.unparsed and not self.pipeline and not self.transport.is_closing():
            # A whole small write is fed as it is (bytes slicing returns the object itself).
            piece = self.unparsed[self.offset : self.offset + SLICE]
            self.offset += len(piece)
            if self.offset >= len(self.unparsed):
                self.unparsed, self.offset = b"", 0
            continuing, begun = self.header_arriving, self.messages
            super().data_received(piece)
            if self.transport.get_protocol() is not self:  # upgraded: the rest is the new one's
                rest, self.unparsed = self.unparsed[self.offset :], b""
                if rest:
                    cast(asyncio.Protocol, self.transport.get_protocol()).data_received(rest)
                return
            if continuing and self.header_arriving and self.messages == begun:
                self.header_streamed += len(piece)
            if self.header_arriving and (
                max(self.header_bytes, self.header_streamed) > self.max_header_bytes
            ):
                self.refuse()
                return
        if not self.unparsed:
            self.flow.resume_reading()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.messages += 1
        self.header_arriving = True
        self.header_bytes = self.header_streamed = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.header_bytes += len(name) + len(value)

    def on_headers_complete(self) -> None:
        self.header_arriving = False
        if self.header_bytes <= self.max_header_bytes:
            super().on_headers_complete()
            return
        # Whole, but too large: this request's cycle runs an app that answers 431 and closes.
        logger.warning("request header fields over %d bytes: 431", self.max_header_bytes)
        app, self.app = self.app, self.answer_too_large
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    async def answer_too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, _ = too_large_response(self.max_header_bytes)
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 431, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def refuse(self) -> None:
        """A header section still arriving is over the limit: parse nothing more, answer 431
        (after the answer in progress, if there is one) and close."""
        logger.warning("request header fields over %d bytes: 431", self.max_header_bytes)
        self.refused = True
        self.unparsed = b""
        self.flow.pause_reading()
        if self.cycle is None or self.cycle.response_complete:
            self.send_too_large()

    def send_too_large(self) -> None:
        body, head = too_large_response(self.max_header_bytes)
        defaults = b"".join(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers)
        self.transport.write(head.replace(b"\r\n", b"\r\n" + defaults, 1) + body)
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # the next request that waited its turn starts
        if self.transport.is_closing():
            return
        if self.refused:
            self.send_too_large()
            return
        self.arm()
        self.parse()

    # A request must arrive within request_timeout; so must the client read each answer.

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

    def pause_writing(self) -> None:
        # The client is not reading: take no more requests until it does, and give up on it
        # if it does not within request_timeout (abort: a close would wait for it to read).
        super().pause_writing()
        self.flow.pause_reading()
        if self.unread is None:
            self.unread = self.loop.call_later(self.request_timeout, self.give_up)

    def give_up(self) -> None:
        logger.info("the client read no answer for %g s: disconnected", self.request_timeout)
        # As a client that hung up: the answers waiting to be written are dropped, and the
        # requests still running see a disconnect (uvicorn's own order on a lost connection).
        for cycle in (self.cycle, *(cycle for cycle, _ in self.pipeline)):
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()
        self.flow.resume_writing()
        self.transport.abort()  # not close(): that would wait for the client to read

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.unread is not None:
            self.unread.cancel()
            self.unread = None
        self.flow.resume_reading()


def limited_protocol(request_timeout: float, max_header_bytes: int) -> type[LimitedHttpProtocol]:
    """uvicorn's httptools protocol (`uvicorn.Config(http=...)`, `--http`), with these limits:

    - a connection whose request has not fully arrived `request_timeout` seconds after the
      connection opened or its previous answer was sent is closed (uvicorn itself bounds only
      the idle time between requests, `--timeout-keep-alive`); a request that arrived whole
      is never cut off, however long the app takes to answer;
    - a request line and header fields over `max_header_bytes` get 431 and the connection is
      closed (httptools has no limit), at most one slice after the limit arrived;
    - pipelined requests are parsed one at a time, as the ones before are answered, and
      nothing more is read while a client leaves its answers unread; one that reads none for
      `request_timeout` seconds is disconnected.
    """

    class Protocol(LimitedHttpProtocol):
        pass

    Protocol.request_timeout = request_timeout
    Protocol.max_header_bytes = max_header_bytes
    return Protocol


class HTTPProtocol(LimitedHttpProtocol):
    """The limits of the settings (REQUEST_TIMEOUT, REQUEST_MAX_HEADER_BYTES), for plain
    uvicorn: `uvicorn <package>.web:app --http <package>.core.client_limits:HTTPProtocol`."""

    def connection_made(self, transport: Any) -> None:
        settings = get_settings()
        self.request_timeout = settings.request_timeout
        self.max_header_bytes = settings.request_max_header_bytes
        super().connection_made(transport)
