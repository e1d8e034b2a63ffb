"""The hosted demo against one visitor with a script (ui.guard): oversized and over-many-valued bodies, queue
hogging, floods of tiny uploads, log flooding, hostile inputs to every kind of event, the first page view, and
the monitoring pages. Raw HTTP against `python app.py` in a subprocess, as such a visitor would send it."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.app_server import export_random_weights, running_app
from ui.guard import QuietLog, check_component_value, client_address, held_events
from ui.upload_cache import UploadCache
from ui.visitor_input import Refused

pytestmark = pytest.mark.slow

LIVE_STREAMS = 3
CLIENT_EVENTS = 2


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    weights = export_random_weights(tmp_path_factory.mktemp("weights"))
    log = tmp_path_factory.mktemp("app") / "app.log"
    with running_app(weights, log, SSD_BACKEND="torch", SSD_MAX_REQUEST="1mb", SSD_MAX_VALUES="5000",
                     SSD_LIVE_STREAMS=str(LIVE_STREAMS), SSD_CLIENT_EVENTS=str(CLIENT_EVENTS),
                     SSD_LIVE_LIMIT_S="600", SSD_FORWARDED_HOPS="1") as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            yield client, log


@pytest.fixture(scope="module")
def fns(app):
    """{api name or handler name: fn_index} of the page, from its own /config."""
    client, _ = app
    config = client.get("/config").json()
    return {d.get("api_name"): d["id"] for d in config["dependencies"]}


def join(client, fn_index, data, session=None, raw=None, address=None):
    """POST an event as the page does; from `address` as the one proxy in front of the app reports it (each
    call its own address unless given, so that tests do not share one visitor's bound)."""
    body = raw if raw is not None else json.dumps(
        {"data": data, "fn_index": fn_index, "session_hash": session or uuid.uuid4().hex[:12],
         "event_data": None, "trigger_id": None})
    address = address or ".".join(str(b) for b in uuid.uuid4().bytes[:4])
    return client.post("/gradio_api/queue/join", content=body,
                       headers={"content-type": "application/json", "x-forwarded-for": address})


def detail(response) -> str:
    """The refusal's message: a string, or (for a refused input) Gradio's validation list, one entry per input."""
    d = response.json()["detail"]
    return d if isinstance(d, str) else " ".join(e["message"] for e in d)


def upload(client, path) -> dict:
    with open(path, "rb") as f:
        r = client.post("/gradio_api/upload", files={"files": (path.name, f, "image/jpeg")})
    r.raise_for_status()
    return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}


def outcome(client, session) -> dict:
    """The event's completion message, read from the session's event stream."""
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") in ("process_completed", "unexpected_error"):
                    return message
    raise AssertionError("the event stream closed without completing")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(path)
    return path


def test_an_oversized_body_is_refused_before_it_is_read_and_others_are_served_meanwhile(app, fns):
    client, _ = app
    rows = json.dumps({"data": [None, [[1, 2, 3, 4, "person"]] * 100_000, 0.5, None], "fn_index": fns["loss"],
                       "session_hash": "big"})
    assert len(rows) > 2 ** 20
    answers = {}
    refused = threading.Thread(target=lambda: answers.update(big=join(client, 0, None, raw=rows)))
    refused.start()
    answers["info"] = client.get("/gradio_api/info")
    refused.join()
    assert answers["big"].status_code == 413 and "at most 1.0 MB" in detail(answers["big"])
    assert answers["info"].status_code == 200


def test_a_body_of_too_many_values_is_refused(app, fns):
    client, _ = app
    r = join(client, fns["loss"], [None, [[1, 2, 3, 4]] * 2000, 0.5, None])  # 10 001 values in 100 KB
    assert r.status_code == 413 and "more than 5000 values" in detail(r)


def test_a_body_without_a_declared_length_is_refused(app):
    client, _ = app

    def chunks():
        yield b'{"data": []}'

    r = client.post("/gradio_api/queue/join", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 411


def test_one_visitor_holds_a_bounded_share_of_the_queue_and_streams_are_counted_before_they_queue(app, fns,
                                                                                                      photo):
    """A webcam stream holds its place until it ends: the fair way to keep one visitor's events in the queue."""
    client, _ = app
    frame = upload(client, photo)
    live = [frame, 0.5, 0.45, 100, [], None]
    joined = []

    def stream(session, address):
        r = join(client, fns["live"], live, session, address=address)
        if r.status_code == 200:
            joined.append((session, r.json()["event_id"]))
        return r

    try:
        assert [stream("hog", "1.1.1.1").status_code for _ in range(CLIENT_EVENTS)] == [200] * CLIENT_EVENTS
        r = stream("hog", "1.1.1.1")  # the same session again
        assert r.status_code == 429 and "You already have 2" in detail(r)
        r = stream("hog-2", "1.1.1.1")  # a new session from the same address: its share is twice a session's
        assert r.status_code == 200
        r = stream("late", "3.3.3.3")  # every stream slot is taken: refused before it queues
        assert r.status_code == 429 and f"All {LIVE_STREAMS} live streams" in detail(r)
        session = "someone-else"
        r = join(client, fns["detect"], [upload(client, photo), 0.5, 0.45, 100, [], None], session)
        assert r.status_code == 200 and outcome(client, session)["success"]
    finally:
        for session, event_id in joined:
            client.post("/gradio_api/cancel", json={"session_hash": session, "fn_index": fns["live"],
                                                    "event_id": event_id})


def test_one_session_holds_a_bounded_share_of_the_queue():
    """held_events counts a session's and an address's events, waiting or running, and a concurrency group's."""

    class Request:
        def __init__(self, host, forwarded=None):
            headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
            self.scope = {"client": (host, 1), "headers": headers}

    class Fn:
        def __init__(self, group):
            self.concurrency_id = group

    class Event:
        def __init__(self, session, host, group, forwarded=None):
            self.session_hash, self.request, self.fn = session, Request(host, forwarded), Fn(group)

    class Waiting:
        def __init__(self, events):
            self.queue = events

    live, det = "live", "default"
    queue = type("Q", (), {})()
    queue.event_queue_per_concurrency_id = {"a": Waiting([Event("s1", "1.1.1.1", live), Event("s1", "1.1.1.1", det),
                                                          Event("s2", "1.1.1.1", det)])}
    queue.active_jobs = [None, [Event("s3", "2.2.2.2", live)]]
    assert held_events(queue, "s1", "1.1.1.1", live, 0) == (2, 3, 2)
    assert held_events(queue, "s3", "2.2.2.2", det, 0) == (1, 1, 2)
    # Behind one proxy the address is the one it appended, not the proxy's (nor what the visitor wrote first).
    proxied = {"client": ("10.0.0.1", 1), "headers": [(b"x-forwarded-for", b"6.6.6.6, 3.3.3.3")]}
    assert client_address(proxied, 1) == "3.3.3.3" and client_address(proxied, 0) == "10.0.0.1"


def test_tiny_uploads_are_bounded_in_number_too(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    cache = UploadCache(folder, max_bytes=10 ** 9, max_files=10)
    for i in range(40):
        cache.admit(1)
        (folder / f"f{i:03d}").write_bytes(b"x")
        cache.done(1)
        cache._looked = -1e9  # as if RESCAN_S had passed: a look at every request
    assert len(list(folder.iterdir())) <= 10


def test_floods_of_bad_requests_write_a_bounded_log(app, fns):
    client, log = app
    before = log.stat().st_size
    for _ in range(100):
        client.get("/gradio_api/queue/data", params={"session_hash": "nosuch"})
        join(client, fns["detect"], [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, 0.5, 0.45,
                                     100, [], None])
    time.sleep(1)
    grown = log.read_text(errors="replace")[before:]
    assert "Traceback" not in grown
    assert len(grown) < 2000, grown[:500]


def test_quiet_log_counts_what_it_holds_back(caplog):
    quiet = QuietLog(every_s=3600)
    assert [quiet.warning("k", "m") for _ in range(5)] == [True] + [False] * 4
    quiet._last["k"] = -1e9
    with caplog.at_level("WARNING", logger="ssd.app"):
        assert quiet.warning("k", "again")
    assert "(and 4 more like it)" in caplog.text


HOSTILE = [  # (event, inputs, what the answer says)
    ("detect", [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, 0.5, 0.45, 100, [], None],
     "not received"),
    ("detect", ["/etc/passwd", 0.5, 0.45, 100, [], None], "not received"),
    ("detect", [5, 0.5, 0.45, 100, [], None], "expected an uploaded file"),
    ("detect", [[1, 2], 0.5, 0.45, 100, [], None], "expected an uploaded file"),
    ("detect", [{"path": "file:///etc/passwd"}, 0.5, 0.45, 100, [], None], "not received"),
    ("detect", [{"path": "../../../etc/passwd"}, 0.5, 0.45, 100, [], None], "not received"),
    ("detect", [{"path": "http://127.0.0.1:9/x.jpg"}, 0.5, 0.45, 100, [], None], "not received"),
    ("detect", [{"url": "http://127.0.0.1:9/x.jpg"}, 0.5, 0.45, 100, [], None], "fetches no URL"),
    ("detect", [None, 10 ** 400, 0.45, 100, [], None], "score_threshold: expected a finite number"),
    ("detect", [None, 0.5, 0.45, 10 ** 400, [], None], "top_k: expected a finite number"),
    ("detect", [None, 0.5, float("nan"), 100, [], None], "nms_threshold: expected a finite number"),
    ("detect", [None, 0.5], "takes 6 inputs, got 2"),
    ("journey", [None, float("inf"), 0.5, 0.45, None], "finite number"),
    ("augment", ["x" * 1_000_00, None, None, False, 0.5, 1], "not one of its choices"),
    ("augment", ["astronaut", None, None, False, float("nan"), 1], "finite number"),
    ("augment", [[1], [2], [3], [4], [5], [6]], "not one of its choices"),
    ("load_example", [99], "examples"),
    ("load_example", [None], "examples"),
]


@pytest.mark.parametrize("event, inputs, says", HOSTILE, ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(HOSTILE)])
def test_hostile_inputs_get_a_short_message_that_names_them(app, fns, event, inputs, says):
    client, log = app
    before = log.stat().st_size
    body = json.dumps({"data": inputs, "fn_index": fns[event], "session_hash": uuid.uuid4().hex[:12]})
    r = join(client, None, None, raw=body)
    assert r.status_code in (404, 411, 413, 422, 429), r.text
    message = detail(r)
    assert says in message and len(message) < 200
    assert "Traceback" not in log.read_text(errors="replace")[before:]


def test_private_events_are_checked_too(app, fns):
    """The page's own events can be called by fn_index by anyone: the default-boxes view with a bad layer or
    row, and an event that does not exist."""
    client, log = app
    # The Default boxes view: layout, layer, row, col, shapes, grid, photo, upload (its handler is a partial).
    view = next(d["id"] for d in client.get("/config").json()["dependencies"]
                if (d.get("api_name") or "").startswith("partial") and len(d["inputs"]) == 8)
    r = join(client, view, ["SSD300", 0, 3, float("inf"), [], True, None, None])
    assert r.status_code == 422 and "expected a finite number, got inf" in detail(r)
    before = log.stat().st_size
    for inputs, says in ((["SSD300", -5, -1e12, 3, [], True, None, None], None),  # clamped: drawn
                         (["SSD300", "x", 3, 3, [], True, None, None], "layer must be a whole number, got 'x'"),
                         (["nosuch" * 1000, 0, 3, 3, [], True, None, None], "nosuchnosuch")):
        session = uuid.uuid4().hex
        assert join(client, view, inputs, session).status_code == 200
        message = outcome(client, session)
        if says is None:
            assert message["success"], message
        else:
            assert not message["success"] and says in message["output"]["error"]
            assert len(message["output"]["error"]) < 200
    r = join(client, 10 ** 6, [])
    assert r.status_code == 404 and "no event" in detail(r)
    assert "Traceback" not in log.read_text(errors="replace")[before:]


def test_a_fault_in_a_handler_is_one_short_message_and_one_log_line(caplog):
    from ui.guard import answering

    def broken(x):
        return [][x]

    wrapped = answering(broken)
    with caplog.at_level("WARNING", logger="ssd.app"):
        for _ in range(3):
            with pytest.raises(Refused, match=r"could not be processed \(IndexError\)"):
                wrapped(5)
    assert caplog.text.count("IndexError") <= 3 and caplog.text.count("Traceback") <= 1


def test_component_checks_name_the_input():
    import gradio as gr

    with pytest.raises(Refused, match="Top-k: expected a finite number, got 'a'"):
        check_component_value(gr.Slider(1, 10, label="Top-k"), "a", "Top-k")
    with pytest.raises(Refused, match=r"Classes: more values \(3\) than choices \(2\)"):
        check_component_value(gr.Dropdown(["a", "b"], multiselect=True), ["a", "a", "a"], "Classes")
    check_component_value(gr.Dropdown(["a", "b"], multiselect=True), ["a", "b"], "Classes")
    check_component_value(gr.Number(), None, "n")
    with pytest.raises(Refused, match="true or false"):
        check_component_value(gr.Checkbox(), "yes", "c")


def test_the_page_settings_travel_compressed(app):
    client, _ = app
    plain = client.get("/config", headers={"accept-encoding": "identity"})
    packed = client.get("/config", headers={"accept-encoding": "gzip"})
    assert packed.headers.get("content-encoding") == "gzip"
    assert int(packed.headers["content-length"]) < len(plain.content) / 4
    assert packed.json() == plain.json()


def test_monitoring_is_off(app):
    client, log = app
    assert client.get("/monitoring/summary").status_code == 403
    assert client.get("/monitoring").status_code == 403
    assert "/monitoring/" not in log.read_text(errors="replace")


def test_the_first_page_view_is_built_once_per_address_and_encoding():
    import asyncio

    from ui.page_cache import MAX_KEYS, PageCache

    built = []

    async def page(scope, receive, send):
        built.append(scope["path"])
        await asyncio.sleep(0.01)  # building takes a while: others arrive meanwhile
        headers = [(b"content-type", b"text/html")] + ([(b"set-cookie", b"a=1")] if scope["path"] == "/c" else [])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"page of " + scope["path"].encode()})

    cache = PageCache(page)

    async def get(path, host=b"a", encoding=b"gzip"):
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "query_string": b"",
                 "headers": [(b"host", host), (b"accept-encoding", encoding)]}
        await cache(scope, None, send)
        return b"".join(m.get("body", b"") for m in sent)

    async def visits():
        assert [await get("/") for _ in range(3)] == [b"page of /"] * 3
        await get("/config")
        await get("/config", encoding=b"identity")
        await get("/config", host=b"b")
        for i in range(MAX_KEYS + 4):
            await get("/", host=str(i).encode())
        await get("/gradio_api/info")
        await get("/gradio_api/info")

    async def at_once():  # arriving while it is built: they wait for it
        return await asyncio.gather(*(get("/", host=b"new") for _ in range(8)))

    asyncio.run(visits())
    assert built.count("/") == 1 + MAX_KEYS + 4 and built.count("/config") == 3
    assert asyncio.run(at_once()) == [b"page of /"] * 8 and built.count("/") == 2 + MAX_KEYS + 4
    assert built.count("/gradio_api/info") == 2  # not cached
    assert len(cache.answers) == MAX_KEYS
