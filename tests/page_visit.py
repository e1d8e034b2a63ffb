"""A visit of the app's page as Gradio's server runs one, for tests: the load events and a tab's opening through
Gradio's own `process_api`, with every warning they raise collected (Python's and the log's)."""

from __future__ import annotations

import asyncio
import logging
import warnings

import gradio as gr
from gradio.state_holder import SessionState

from ui.demo_models import DemoModel


class Visit:
    """One browser session on `demo`: each event's inputs are what the page shows at that moment, and its outputs
    change what it shows (a gr.update its value, a skip nothing), through Gradio's own `process_api`."""

    def __init__(self, demo: gr.Blocks):
        self.demo, self.session = demo, SessionState(demo)
        self.shown = {i: getattr(block, "value", None) for i, block in demo.blocks.items()}

    def run(self, fn):
        out = asyncio.run(self.demo.process_api(fn, [self.shown[c._id] for c in fn.inputs], self.session))
        for component, value in zip(fn.outputs, out["data"]):
            if not (isinstance(value, dict) and value.get("__type__") == "update"):
                self.shown[component._id] = value
            elif "value" in value:
                self.shown[component._id] = value["value"]
        return fn

    def load(self):
        """What a browser's page load runs: the load events, then what each chains with `.then`."""
        done = [self.run(fn) for fn in self.demo.fns.values() if any(e == "load" for _, e in fn.targets)]
        while done:
            after = {fn._id for fn in done}
            done = [self.run(fn) for fn in self.demo.fns.values() if fn.trigger_after in after]

    def event(self, qualname: str):
        """Runs the (first) event whose handler is `qualname`, e.g. "AugmentTab.render" (opening that tab)."""
        return self.run(next(fn for fn in self.demo.fns.values() if getattr(fn.fn, "__qualname__", "") == qualname))

    def value(self, elem_id: str):
        return next(self.shown[i] for i, b in self.demo.blocks.items() if getattr(b, "elem_id", None) == elem_id)


def opened(model: DemoModel, caplog) -> tuple[Visit, list[str]]:
    """The page of `model` loaded and its Augmentation tab opened; and every warning that raised: Python's (Gradio
    warns so of a value that is not among a dropdown's choices) and the app's log's."""
    import app

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        # What Python leaves out of a server's log by default, as the app's log does.
        for kind in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", kind)
        visit = Visit(app.build_demo(model))
        visit.load()
        visit.event("AugmentTab.render")
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return visit, [f"{w.category.__name__}: {w.message}" for w in caught] + logged
