"""The first page view, served from memory. Gradio builds the page (`/`, about 340 KB with the settings inlined)
and its settings (`/config`, about 300 KB of JSON) anew for every request, a tenth of a second each on 2 cores
and several seconds when 32 visitors arrive at once. Both are the same for every visitor of one address (the
page names the URL it was reached by), so `PageCache` keeps each answer, compressed as it was sent, by the
request's path, host and encoding; an answer that sets a cookie is never kept. Visitors who arrive while an
answer is being built wait for it instead of building it again (32 at once otherwise build 32 pages). At most
`MAX_KEYS` answers are kept (a visitor can vary the Host header at will), the least recently used going first."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

CACHED_PATHS = ("/", "/config")
MAX_KEYS = 16
KEYED_HEADERS = (b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-prefix")


class PageCache:
    """ASGI middleware: GET of CACHED_PATHS answered from memory once answered."""

    def __init__(self, app):
        self.app = app
        self.answers: OrderedDict[tuple, tuple[int, list, bytes]] = OrderedDict()
        self.building: dict[tuple, asyncio.Event] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") not in CACHED_PATHS:
            return await self.app(scope, receive, send)
        key = self.key(scope)
        if key in self.building:
            await self.building[key].wait()
        if key in self.answers:
            self.answers.move_to_end(key)
            status, headers, body = self.answers[key]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        done = self.building.setdefault(key, asyncio.Event())
        try:
            await self._build(key, scope, receive, send)
        finally:
            if self.building.get(key) is done:
                del self.building[key]
            done.set()

    async def _build(self, key, scope, receive, send):
        start, chunks = {}, []

        async def keeping_send(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body") and self.keepable(start):
                    self.answers[key] = (start["status"], list(start.get("headers", [])), b"".join(chunks))
                    while len(self.answers) > MAX_KEYS:
                        self.answers.popitem(last=False)
            await send(message)

        await self.app(scope, receive, keeping_send)

    @staticmethod
    def key(scope) -> tuple:
        headers = dict(scope.get("headers") or [])
        gzip = b"gzip" in headers.get(b"accept-encoding", b"")
        return (scope["path"], scope.get("query_string", b""), gzip,
                *(headers.get(h, b"") for h in KEYED_HEADERS))

    @staticmethod
    def keepable(start: dict) -> bool:
        return start.get("status") == 200 and not any(k.lower() == b"set-cookie" for k, _ in start.get("headers", []))
