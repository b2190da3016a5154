"""httpx transports that record what the client sends and break connections on purpose:
the real server still answers every request that gets through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


@dataclass
class Exchange:
    """One request as sent, the moment it was sent, and the answer's status if any."""

    request: httpx.Request
    sent_at: float
    status: int | None = None
    answered_at: float | None = None
    retry_after: str | None = None


class Recording(httpx.HTTPTransport):
    """Passes every request to the server and keeps a record of each."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[Exchange] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        exchange = Exchange(request, time.monotonic())
        self.exchanges.append(exchange)
        response = self.forward(request)
        exchange.status = response.status_code
        exchange.answered_at = time.monotonic()
        exchange.retry_after = response.headers.get("Retry-After")
        return response

    def forward(self, request: httpx.Request) -> httpx.Response:
        return super().handle_request(request)

    def to(self, method: str, path_end: str) -> list[Exchange]:
        return [
            exchange
            for exchange in self.exchanges
            if exchange.request.method == method and exchange.request.url.path.endswith(path_end)
        ]


class LosesFirstSubmitAnswer(Recording):
    """The first submit reaches the server whole and is answered; the answer is lost
    on the way back, as when a connection resets after the request was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: httpx.Response | None = None

    def forward(self, request: httpx.Request) -> httpx.Response:
        response = super().forward(request)
        if self.lost is None and request.url.path == "/v1/bulk":
            response.read()
            response.close()
            self.lost = response
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response


class BreaksFirstSubmitBody(Recording):
    """The first submit's connection breaks after its first chunk of body was read
    (and never reaches the server); the next goes through."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def forward(self, request: httpx.Request) -> httpx.Response:
        if not self.broken and request.url.path == "/v1/bulk":
            self.broken = True
            assert isinstance(request.stream, httpx.SyncByteStream)
            next(iter(request.stream))
            raise httpx.WriteError("connection broke while sending", request=request)
        return super().forward(request)


class _CutAfterFirstEvent(httpx.SyncByteStream):
    """An event stream that breaks right after its first event with an id."""

    def __init__(self, stream: httpx.SyncByteStream, record: list[str]) -> None:
        self._stream = stream
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        buffered = b""
        for chunk in self._stream:
            buffered += chunk
            start = 0
            while (end := buffered.find(b"\n\n", start)) != -1:
                block, start = buffered[start:end], end + 2
                ids = [line for line in block.split(b"\n") if line.startswith(b"id:")]
                if ids:
                    self._record.append(ids[0].removeprefix(b"id:").strip().decode())
                    yield buffered[:start]
                    raise httpx.ReadError("the event stream broke off")
        yield buffered

    def close(self) -> None:
        self._stream.close()


class DropsFirstEventStream(Recording):
    """The first event stream breaks after its first event; ``cut_after`` holds that
    event's id."""

    def __init__(self) -> None:
        super().__init__()
        self.cut_after: list[str] = []
        self._cut = False

    def forward(self, request: httpx.Request) -> httpx.Response:
        response = super().forward(request)
        if request.url.path.endswith("/events") and not self._cut:
            self._cut = True
            assert isinstance(response.stream, httpx.SyncByteStream)
            response.stream = _CutAfterFirstEvent(response.stream, self.cut_after)
        return response


class NoEventStream(Recording):
    """A proxy in front of the server that answers 405 to event streams."""

    def forward(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(405, json={"code": "method_not_allowed"}, request=request)
        return super().forward(request)
