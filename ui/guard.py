"""The hosted demo's door: what one visitor with a script may ask of the server, checked before Gradio reads it.

Gradio parses and validates a request's whole body on the server's event loop, queues whatever is joined until
the queue is full, and prints a traceback for every input it cannot process. Each of these lets one anonymous
visitor deny the demo to everybody else (a 30 MB body stalls every request for seconds; 68 joins fill the queue;
a flood of bad requests fills the log). `RequestGuard` sits in front of the app and answers such requests itself,
with a short message and no traceback:

- every POST needs a declared length within its bound (uploads: the upload limit plus multipart's envelope;
  every other request SSD_MAX_REQUEST), and a JSON body at most SSD_MAX_VALUES values, counted off the event
  loop, so nothing oversized reaches Gradio's parser;
- an event call must name an event of this page, give it as many inputs as it takes, and give a file input only
  a file Gradio received (never a server path or a URL, which Gradio would read or fetch);
- one visitor (a session, and an address) holds at most SSD_CLIENT_EVENTS events in the queue at once, and a
  webcam stream is counted against SSD_LIVE_STREAMS before it is queued;
- the event stream of a session the queue does not know is answered as Gradio answers it, without Gradio's
  traceback; anything else that escapes the app is logged as one line, and a burst of such lines as one count.

`guard_handlers` does the same for the page's own handlers: an exception that is not a refusal becomes a short
message for the visitor and one log line (the first of each kind with its traceback, for the developer).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable

import anyio
import gradio as gr

from .visitor_input import Refused, received_path, short

log = logging.getLogger("ssd.app")

JSON_EVENT_PATHS = ("/gradio_api/queue/join", "/gradio_api/run/", "/gradio_api/call/")
UPLOAD_PATH = "/gradio_api/upload"
QUEUE_DATA_PATH = "/gradio_api/queue/data"
MULTIPART_SLACK = 1 << 20  # a multipart upload's boundaries and headers on top of its file
NOT_FOUND_EVENT = (b'data: {"msg":"unexpected_error","event_id":null,"message":"404: Not Found",'
                   b'"session_not_found":true,"success":false}\n\n')


class QuietLog:
    """At most one line every `every_s` seconds per kind; the lines held back meanwhile are counted into the next.
    A flood of bad requests then grows the log by a few lines a second, whatever their number."""

    def __init__(self, every_s: float = 5.0):
        self.every_s, self._last, self._held = every_s, {}, {}
        self._lock = threading.Lock()

    def warning(self, kind: str, message: str, exc_info=None) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last.get(kind, -1e9) < self.every_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind], held = now, self._held.pop(kind, 0)
        log.warning("%s%s", message, f" (and {held} more like it)" if held else "", exc_info=exc_info)
        return True


QUIET = QuietLog()


def count_values(value, limit: int) -> int:
    """JSON values in `value` (containers and leaves), counting stops past `limit`."""
    n, stack = 0, [value]
    while stack and n <= limit:
        v = stack.pop()
        n += 1
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return n


def is_file_input(component) -> bool:
    """Inputs whose values Gradio treats as files (images, files, galleries): their data model has a path."""
    model = getattr(component, "data_model", None)
    return "path" in getattr(model, "model_fields", {}) or isinstance(component, gr.Gallery | gr.File)


def check_file_value(value, name: str):
    """A file input's value: nothing, a file Gradio received, or an image pasted as a data URL. A path outside
    Gradio's upload folder and every URL are refused here, before Gradio would read or fetch them."""
    if value is None:
        return
    if isinstance(value, list):
        for item in value[:1000]:
            check_file_value(item.get("image", item) if isinstance(item, dict) else item, name)
        return
    if isinstance(value, str):
        received_path(value)
        return
    if not isinstance(value, dict):
        raise Refused(f"{name}: expected an uploaded file, got {type(value).__name__}.")
    path, url = value.get("path"), value.get("url")
    if path is not None:
        if not isinstance(path, str):
            raise Refused(f"{name}: expected an uploaded file, got a path of type {type(path).__name__}.")
        received_path(path)
    elif isinstance(url, str) and url.startswith("data:"):
        return
    elif url is not None:
        raise Refused(f"{name}: this demo fetches no URL ({short(str(url))}); upload the file instead.")


def check_component_value(component, value, name: str, preprocessed: bool = True):
    """`value` within what `component` can hold on the page, or Refused naming the input and at most 60
    characters of what was sent. Gradio reads every file input itself, so files are always checked. For an event
    whose values Gradio converts first (`preprocessed`), whatever its conversion would choke on is checked too (a
    number for a slider, one of its choices for a dropdown, …); an event that takes its values raw leaves their
    meaning to its handler, which names what is wrong (ui.visitor_input), so only what no handler can use is refused
    here: containers for numbers, numbers that are not finite or beyond any range."""
    if is_file_input(component):
        return check_file_value(value, name)
    sent = short(repr(value))
    if isinstance(component, gr.Slider | gr.Number):
        if value is None and (isinstance(component, gr.Number) or not preprocessed):
            return
        if isinstance(value, str) and not preprocessed:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or not abs(value) <= 1e12:
            raise Refused(f"{name}: expected a finite number, got {sent}.")
    elif not preprocessed:
        return
    elif isinstance(component, gr.Checkbox):
        if not isinstance(value, bool):
            raise Refused(f"{name}: expected true or false, got {sent}.")
    elif isinstance(component, gr.Dropdown | gr.Radio | gr.CheckboxGroup):
        check_choices(component, value, name)
    elif isinstance(component, gr.Dataset):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(component.samples):
            raise Refused(f"{name}: expected the number of one of its {len(component.samples)} examples, got "
                          f"{sent}.")
    elif isinstance(component, gr.Dataframe):
        if value is not None and not isinstance(value, dict | list):
            raise Refused(f"{name}: expected a table, got {sent}.")


def check_choices(component, value, name: str):
    allowed = [c[1] if isinstance(c, tuple | list) else c for c in component.choices or []]
    many = isinstance(component, gr.CheckboxGroup) or getattr(component, "multiselect", False)
    if many and not isinstance(value, list | type(None)):
        raise Refused(f"{name}: expected a list of choices, got {short(repr(value))}.")
    values = value if many and isinstance(value, list) else [value]
    if len(values) > max(1, len(allowed)):
        raise Refused(f"{name}: more values ({len(values)}) than choices ({len(allowed)}).")
    for v in values:
        custom = getattr(component, "allow_custom_value", False) and isinstance(v, str) and len(v) <= 100
        if v is not None and not custom and not any(type(v) is type(a) and v == a for a in allowed):
            raise Refused(f"{name}: {short(repr(v))} is not one of its choices.")


def client_address(scope, forwarded_hops: int) -> str:
    """The visitor's address: the one the `forwarded_hops`-th proxy in front of the server appended to
    X-Forwarded-For (a Space has one), else the connection's peer. Entries left of those a visitor can forge."""
    if forwarded_hops > 0:
        for key, value in scope.get("headers") or []:
            if key == b"x-forwarded-for":
                hops = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
                if len(hops) >= forwarded_hops:
                    return hops[-forwarded_hops]
    client = scope.get("client")
    return client[0] if client else "?"


def held_events(queue, session_hash: str, address: str, concurrency_id: str, forwarded_hops: int
                ) -> tuple[int, int, int]:
    """(this session's, this address's, this concurrency group's) events waiting in Gradio's queue or running."""
    events = [e for q in queue.event_queue_per_concurrency_id.values() for e in q.queue]
    events += [e for job in queue.active_jobs if job for e in job]
    by_session = by_address = same_group = 0
    for e in events:
        by_session += e.session_hash == session_hash
        request = getattr(e, "request", None)
        by_address += request is not None and client_address(request.scope, forwarded_hops) == address
        same_group += e.fn.concurrency_id == concurrency_id
    return by_session, by_address, same_group


class Refusal(Exception):
    """An answer the guard gives instead of the app. A refused input is answered as Gradio answers a failed
    validation (422 with one entry per parameter), which gradio_client raises as a ValidationError that quotes it."""

    def __init__(self, status: int, message: str, parameter: str | None = None):
        super().__init__(message)
        self.status, self.message, self.parameter = status, message, parameter

    def payload(self) -> dict:
        if self.parameter is None:
            return {"detail": self.message}
        return {"detail": [{"__type__": "validate", "is_valid": False, "parameter_name": self.parameter,
                            "message": self.message}]}


def parameter_names(fn) -> list[str]:
    """The names of an event handler's inputs, as the API page lists them (its parameters, in order)."""
    try:
        params = inspect.signature(fn.fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.annotation not in (gr.SelectData, "gr.SelectData", gr.Request, "gr.Request")]


class RequestGuard:
    """ASGI middleware in front of the whole app (see the module's text). `blocks` is the page (gr.Blocks)."""

    def __init__(self, app, blocks, max_request: int, max_upload: int, max_values: int, client_events: int,
                 forwarded_hops: int = 0):
        self.app, self.blocks = app, blocks
        self.max_request, self.max_upload = max_request, max_upload + MULTIPART_SLACK
        self.max_values, self.client_events, self.forwarded_hops = max_values, client_events, forwarded_hops

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._guarded(scope, receive, tracked_send)
        except Refusal as r:
            await respond(send, r.status, r.payload())
        except Exception as e:  # the app's own fault: one line, not uvicorn's page of traceback
            QUIET.warning(f"asgi {type(e).__name__}", f"{scope.get('method')} {short(scope.get('path', ''))}: "
                          f"{type(e).__name__}: {short(str(e), 120)}")
            if not started:
                await respond(send, 500, {"detail": "The server could not answer this request."})

    async def _guarded(self, scope, receive, send):
        path, method = scope.get("path", ""), scope.get("method")
        if method == "GET" and path.endswith(QUEUE_DATA_PATH) and not self._session_known(scope):
            return await respond_raw(send, 200, NOT_FOUND_EVENT, b"text/event-stream")
        if method != "POST":
            return await self.app(scope, receive, send)
        limit = self.max_upload if path.endswith(UPLOAD_PATH) else self.max_request
        declared = declared_length(scope)
        if declared is None:
            raise Refusal(411, "A request body needs a Content-Length header.")
        if declared > limit:
            raise Refusal(413, f"The request is {declared / 2 ** 20:.1f} MB; this demo accepts at most "
                               f"{limit / 2 ** 20:.1f} MB per request (upload images as files).")
        if not any(p in path for p in JSON_EVENT_PATHS):
            return await self.app(scope, receive, send)
        body = await read_body(receive, limit)
        await anyio.to_thread.run_sync(self._check_event, scope, path, body)
        await self.app(scope, replay(body), send)

    def _session_known(self, scope) -> bool:
        from urllib.parse import parse_qs

        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session = (query.get("session_hash") or [""])[0]
        return session in self.blocks._queue.pending_messages_per_session

    def _check_event(self, scope, path: str, body: bytes):
        """Runs in a worker thread: parsing and walking a large body never holds the event loop."""
        try:
            payload = json.loads(body) if body else None
        except (ValueError, RecursionError):
            raise Refusal(422, "The request body is not JSON.") from None
        if count_values(payload, self.max_values) > self.max_values:
            raise Refusal(413, f"The request holds more than {self.max_values} values; no input of this demo "
                               "needs that many.")
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise Refusal(422, 'The request needs a JSON object with a "data" list of the inputs.')
        fn = self._event(path, payload)
        data = payload["data"]
        if len(data) != len(fn.inputs):
            raise Refusal(422, f"This event takes {len(fn.inputs)} inputs, got {len(data)}.")
        names = parameter_names(fn)
        for i, (component, value) in enumerate(zip(self._components(fn, payload.get("session_hash")), data)):
            name = names[i] if i < len(names) else getattr(component, "label", None) or f"input {i}"
            try:
                check_component_value(component, value, name, fn.preprocess)
            except Refused as e:
                raise Refusal(422, e.message, parameter=name) from None
        if path.endswith("/queue/join"):
            self._check_share(scope, payload, fn)

    def _components(self, fn, session) -> list:
        """`fn`'s inputs as this session's page has them: an event can change a dropdown's choices for one
        visitor, and Gradio checks a value against that copy (a session's state is looked up, never created)."""
        state = self.blocks.state_holder.session_data.get(session) if isinstance(session, str) else None
        blocks = state.blocks_config.blocks if state is not None else self.blocks.blocks
        return [blocks.get(c._id, c) for c in fn.inputs]

    def _event(self, path: str, payload: dict):
        fns = self.blocks.fns
        index = payload.get("fn_index")
        if index is not None:
            if not isinstance(index, int) or isinstance(index, bool) or index not in fns:
                raise Refusal(404, f"This page has no event {short(repr(index))}.")
            return fns[index]
        name = path.rstrip("/").rsplit("/", 1)[-1]
        for fn in fns.values():
            if fn.api_name == name:
                return fn
        raise Refusal(404, f"This page has no event {short(repr(name))}.")

    def _check_share(self, scope, payload: dict, fn):
        session = payload.get("session_hash")
        if not isinstance(session, str) or not 0 < len(session) <= 100:
            raise Refusal(422, "A queued request needs a session_hash (a string of up to 100 characters).")
        address = client_address(scope, self.forwarded_hops)
        by_session, by_address, same_group = held_events(self.blocks._queue, session, address, fn.concurrency_id,
                                                         self.forwarded_hops)
        # An address may be a classroom behind one router: it holds twice a session's share.
        if by_session >= self.client_events or by_address >= 2 * self.client_events:
            raise Refusal(429, f"You already have {max(by_session, by_address)} requests waiting or running; "
                               "wait for them to finish.")
        if fn.connection == "stream" and fn.concurrency_limit and same_group >= fn.concurrency_limit:
            raise Refusal(429, f"All {fn.concurrency_limit} live streams are in use; try again in a minute.")


def declared_length(scope) -> int | None:
    for key, value in scope.get("headers") or []:
        if key == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return None
    return None


async def read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(400, "The request ended before its body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # more than it declared
            raise Refusal(413, "The request body is longer than its Content-Length.")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def respond_raw(send, status: int, body: bytes, content_type: bytes = b"application/json"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def respond(send, status: int, payload: dict):
    await respond_raw(send, status, json.dumps(payload).encode())


def answering(fn: Callable) -> Callable:
    """`fn` with every exception that is not already a message for the visitor turned into one (and one log
    line, rate-limited; the first of each kind with its traceback). Keeps `fn`'s kind (plain, coroutine,
    generator), which Gradio reads off the function, and its signature, through functools.wraps."""
    inner = getattr(fn, "func", fn)  # a functools.partial names its function
    name = getattr(inner, "__qualname__", getattr(inner, "__name__", "handler"))
    seen: set[str] = set()

    def fault(e: Exception):
        if isinstance(e, gr.Error):  # already a message for the visitor
            return e
        kind = f"{name} {type(e).__name__}"
        first = kind not in seen
        seen.add(kind)
        QUIET.warning(kind, f"{name}: {type(e).__name__}: {short(str(e), 120)}", exc_info=e if first else None)
        return Refused(f"This request could not be processed ({type(e).__name__}); check its inputs.")

    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except Exception as e:
                raise fault(e) from None
    elif inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise fault(e) from None
    elif inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except Exception as e:
                raise fault(e) from None
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                raise fault(e) from None
    wrapper.answers_faults = True
    return wrapper


def guard_handlers(blocks) -> None:
    """Every event function of `blocks` (public or private: any visitor can call either by fn_index) answers
    a fault with a short message (`answering`)."""
    for block_fn in blocks.fns.values():
        if block_fn.fn is not None and not getattr(block_fn.fn, "answers_faults", False):
            block_fn.fn = answering(block_fn.fn)
