"""A tiny raw HTTP/1.x client for the HTTP suite (imported as `raw_http`): it sends exact bytes.

`requests` normalises what it sends (it fixes Content-Length, refuses odd methods, adds Host), so
protocol abuse goes through here instead: one connection per call, to 127.0.0.1 only, the bytes
written as given, optionally the write side shut afterwards (the server then sees the end of
input at once instead of waiting for its own read timeout), and one response read within a
deadline. Interim `1xx` responses are skipped. The body is read by Content-Length, chunked, or
until the server closes; for a `head` request (no body by definition) everything the server sends
until it closes the connection is kept as `body`, so a test can check that nothing followed the
headers. `send` returns None when the server closed the connection without answering, and raises
`RawTimeout` when it neither answers nor closes in time: a hang fails, it never blocks.

A `RawResponse` has `status_code`, `headers` (case-insensitive), `text` and `json()` like a
`requests.Response`, so http_checks.assert_error accepts it.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict

DEFAULT_TIMEOUT_S = 30.0
HOST = "127.0.0.1"


class RawTimeout(AssertionError):
    """The server neither answered nor closed the connection within the deadline (a hang)."""


@dataclasses.dataclass
class RawResponse:
    status_code: int
    reason: str
    headers: CaseInsensitiveDict
    body: bytes

    @property
    def content(self) -> bytes:
        return self.body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body)


def port_of(base_url: str) -> int:
    parts = urlsplit(base_url)
    assert parts.hostname == HOST, f"raw requests go to {HOST} only, not {base_url}"
    assert parts.port is not None, base_url
    return parts.port


def send(
    base_url: str,
    data: bytes,
    *,
    shut_write: bool = False,
    head: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RawResponse | None:
    """Send `data` on a fresh connection to `base_url`'s port and read one response."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((HOST, port_of(base_url)), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before reading everything: read that answer
        received = b""
        closed = False
        while True:
            parsed = _parse(received, head=head, closed=closed)
            if parsed is not None:
                return parsed
            if closed:
                if not received:
                    return None
                raise AssertionError(f"the server closed the connection mid-response: {received[:300]!r}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RawTimeout(f"no complete response within {timeout_s} s; received {received[:300]!r}")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise RawTimeout(
                    f"no complete response within {timeout_s} s; received {received[:300]!r}"
                ) from None
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received += chunk
            else:
                closed = True


def _parse(received: bytes, *, head: bool, closed: bool) -> RawResponse | None:
    """The final response in `received`, or None while it is incomplete."""
    while True:
        end = received.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = received[:end].decode("iso-8859-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        assert version.startswith("HTTP/"), f"not an HTTP status line: {lines[0]!r}"
        code, _, reason = rest.partition(" ")
        status = int(code)
        if 100 <= status < 200:
            received = received[end + 4 :]  # an interim response (100 Continue): the real one follows
            continue
        break
    headers = CaseInsensitiveDict()
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    rest_bytes = received[end + 4 :]
    if head:
        if not closed:
            return None  # read to the end: whatever follows the headers is a body that must not be there
        body = rest_bytes
    elif status in (204, 304):
        body = b""
    elif "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = _dechunk(rest_bytes)
        if body is None:
            return None
    elif "Content-Length" in headers:
        length = int(headers["Content-Length"])
        if len(rest_bytes) < length:
            return None
        body = rest_bytes[:length]
    elif closed:
        body = rest_bytes  # no length: the body runs until the server closes
    else:
        return None
    return RawResponse(status_code=status, reason=reason, headers=headers, body=body)


def _dechunk(data: bytes) -> bytes | None:
    body = b""
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return None
        size = int(data[:line_end].split(b";")[0], 16)
        if size == 0:
            return body
        start = line_end + 2
        if len(data) < start + size + 2:
            return None
        body += data[start : start + size]
        data = data[start + size + 2 :]


def request_bytes(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str | list[str] | None] | None = None,
    content_length: int | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """A request as bytes: `Host` and `Connection: close`, then `headers` (a list value: that header
    once per item; None: left out), then a `Content-Length` of the body's length (or
    `content_length`, true or not) unless `headers` name Transfer-Encoding or Content-Length
    themselves or a request other than POST has no body."""
    sent: dict[str, str | list[str] | None] = {"Host": HOST, "Connection": "close"}
    sent.update(headers or {})
    framed = "Transfer-Encoding" in sent or "Content-Length" in sent
    if not framed and (body or content_length is not None or method == "POST"):
        sent["Content-Length"] = str(len(body) if content_length is None else content_length)
    lines = [f"{method} {path} {version}"]
    for name, value in sent.items():
        for one in [] if value is None else value if isinstance(value, list) else [value]:
            lines.append(f"{name}: {one}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*pieces: bytes, extension: bytes = b"", trailer: bytes = b"") -> bytes:
    """`pieces` as a chunked body (each piece one chunk, `extension` after each size)."""
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(piece), extension, piece) for piece in pieces)
    return out + b"0\r\n" + trailer + b"\r\n"
