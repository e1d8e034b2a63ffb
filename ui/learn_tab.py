"""The Learn tab: a copy of the served network trains on one photo with its ground truth, a class it never saw
included, and the visitor watches it learn: the loss and its two terms, the matched default boxes' probability of
their class, the boxes they predict, the hard negatives' probability of background; then the copy's detections
beside the served model's, on this photo and another. The training is the library's (`ssd.learn`: SSD's
augmentation, `MultiBoxLoss`, an SGD step on the heads' last layers); the served model never changes.

One copy per visitor, kept in the session's state (STATE_TTL_S) and let go with it: the frozen layers are one
page-wide copy per model (`ui.learn_run.Copies.template`), so a visitor's copy holds only its heads. At most
LEARN_RUNS runs at once: a Train pressed meanwhile is refused with a message; every step takes the page's network
slot like any forward pass (`DemoModel.network`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from ssd.learn import HeadTraining, LearnRecipe, LearnStep
from visualize.draw import draw_marker, fit
from visualize.examples import example_image, example_names
from visualize.learn import (
    draw_ground_truth,
    draw_predicted_boxes,
    draw_probabilities,
    learning_rows,
    parse_learning_rows,
    plot_learning,
    progress_markdown,
)
from visualize.matching import GroundTruth

from .demo_models import NO_MODEL, DemoModel, DemoModels
from .learn_run import Copies, Learned
from .links import PhotoInputs
from .pictures import drawn_picture
from .settings import (
    LEARN_EVERY,
    LEARN_MAX_STEPS,
    LEARN_RUNS,
    LEARN_STEPS,
    MATCH_SIDE,
    MAX_GT_ROWS,
    STATE_TTL_S,
)
from .visitor_input import Refused, check_number, from_jpeg, read_upload, served, to_jpeg, upload_source

GT_HEADERS = ["class", "x1", "y1", "x2", "y2"]
FROM_MATCHING = "the Matching tab's photo and ground truth"
MAX_NEW_CLASSES = 3
BUSY = ("A copy of the network is already learning on this server (yours or another visitor's), and one run takes "
        "the server's cores for tens of seconds: try again in a minute.")
INTRO = f"""**Watch SSD learn.** A copy of the served network trains on one photo and its ground truth, the way
training does (paper §2.2–§3): SSD's augmentation makes {LearnRecipe().views} views of the photo, the MultiBox loss
matches their ground truth to the default boxes, mines the hard negatives and scores the predictions, and SGD moves
the weights. Give a box a class the model has never seen (the coffee photo's **mug**): it gets a column of its own
in every confidence head, started from background, and learns from this photo alone. Only the heads' last layers
train; the base network stays frozen, and the served model never changes. Then compare the copy's detections with
the served model's, here and on another photo."""


@dataclass
class LearnPhoto:
    """The photo to learn, per browser session: as shown (JPEG, at most MATCH_SIDE pixels), its scale from the
    photo's pixels (the table's), and the photo's size."""

    jpeg: bytes
    scale: float
    width: int
    height: int
    name: str

    @classmethod
    def of(cls, image: Image.Image, name: str) -> LearnPhoto:
        display, scale = fit(image, MATCH_SIDE)
        return cls(to_jpeg(display), scale, image.width, image.height, name)

    @classmethod
    def like(cls, state) -> LearnPhoto:
        """The Matching tab's photo (its state has the same fields)."""
        return cls(to_jpeg(state.display), state.scale, state.width, state.height, state.name)

    @property
    def display(self) -> Image.Image:
        return from_jpeg(self.jpeg)

    def on_display(self, gt: GroundTruth) -> GroundTruth:
        """Ground truth in the photo's pixels -> in the shown picture's."""
        image_w, image_h = round(self.width * self.scale), round(self.height * self.scale)
        s = self.scale
        return GroundTruth(gt.labels, [tuple(v * s for v in box) for box in gt.boxes], image_w, image_h)


NEW_RUN = "Press **Train** to learn this photo and its ground truth."


def cleared(note: str = NEW_RUN) -> tuple:
    """The run's views on this photo emptied (probabilities, predicted boxes, curves, status, numbers, the served
    model's and the copy's detections): a new photo or new ground truth is not what they show. The copy itself
    stays, for another photo, until Train or Reset."""
    return None, None, None, note, None, None, None


def run_views() -> tuple:
    """What a run shows, under the photo: (its status, the matched default boxes' probabilities, the positives'
    predicted boxes, the curves, the served model's detections on the photo, the trained copy's)."""
    status = gr.Markdown(elem_id="learn-status")
    with gr.Row():
        with gr.Column():
            probabilities = drawn_picture("Matched default boxes, coloured by p(their object's class); dots: "
                                          "hard negatives, by p(background)", format="jpeg",
                                          elem_id="learn-probabilities", height=340)
        with gr.Column():
            boxes = drawn_picture("The positives' predicted boxes (decoded), moving onto the objects",
                                  format="jpeg", elem_id="learn-boxes", height=340)
    curves = drawn_picture("Step by step", format="png", elem_id="learn-curves", height=300)
    with gr.Row():
        with gr.Column():
            served_out = drawn_picture("The served model on this photo", format="jpeg", elem_id="learn-served",
                                       height=280)
        with gr.Column():
            trained_out = drawn_picture("The trained copy on this photo", format="jpeg",
                                        elem_id="learn-trained", height=280)
    return status, probabilities, boxes, curves, served_out, trained_out


def other_photo_section() -> tuple:
    """The served model beside the trained copy on another photo: (its example picker, its upload, a message, the
    served model's detections, the copy's)."""
    with gr.Accordion("Another photo: the served model and the trained copy", open=True, elem_id="learn-other"):
        with gr.Row():
            other = gr.Dropdown(example_names(), value=None, label="Example photo", elem_id="learn-other-photo",
                                scale=1)
            other_upload = gr.Image(type="filepath", image_mode=None, label="…or your own",
                                    sources=["upload", "clipboard"], height=140, elem_id="learn-other-upload",
                                    scale=1)
        other_message = gr.Markdown(elem_id="learn-other-message")
        with gr.Row():
            with gr.Column():
                other_served = drawn_picture("The served model", format="jpeg", elem_id="learn-other-served",
                                             height=280)
            with gr.Column():
                other_trained = drawn_picture("The trained copy", format="jpeg", elem_id="learn-other-trained",
                                              height=280)
    return other, other_upload, other_message, other_served, other_trained


class LearnTab:
    def __init__(self, models: DemoModel | DemoModels):
        self.models = DemoModels.of(models)
        self.runs = threading.BoundedSemaphore(LEARN_RUNS)
        self.copies = Copies(self.models)

    # ------------------------------------------------------------------------------------------ the photo
    def load_photo(self, photo, match_state=None, match_rows=None):
        """An example (its ground truth and any new class drawn on it) or the Matching tab's photo and table:
        (state, rows, picture, notes, pending corner, cleared upload, the run's views `cleared`)."""
        if photo is None:
            return (gr.skip(),) * 13
        if photo == FROM_MATCHING:
            if match_state is None:
                raise Refused("The Matching tab has no photo yet: open it and pick or upload one.")
            state = LearnPhoto.like(match_state)
            rows = [list(r) for r in (match_rows or []) if isinstance(r, list | tuple)]
        else:
            name = photo if photo in example_names() else "coffee"
            state, rows = LearnPhoto.of(example_image(name), name), learning_rows(name)
        picture, notes = self.picture(state, rows)
        return state, rows, picture, notes, None, gr.Image(value=None), *cleared()

    def load_upload(self, value):
        """One's own photo, with an empty table: (state, rows, picture, notes, pending, the example dropdown let go,
        the run's views `cleared`)."""
        if value is None:
            return (gr.skip(),) * 13
        state = LearnPhoto.of(read_upload(value), upload_source(value)[1])
        picture, notes = self.picture(state, [])
        return state, [], picture, notes, None, gr.Dropdown(value=None), *cleared()

    def photo_of(self, state, photo) -> LearnPhoto:
        """The session's photo; after its state expired (STATE_TTL_S), the example the dropdown still shows."""
        if state is not None:
            return state
        if photo in example_names():
            return LearnPhoto.of(example_image(photo), photo)
        raise Refused("This page's photo has expired: pick an example or upload your photo again.")

    def ground_truth(self, state: LearnPhoto, rows, model=None):
        """(GroundTruth in the photo's pixels, new classes, problems)."""
        return parse_learning_rows(rows, self.models.get(model).class_names, state.width, state.height,
                                   max_rows=MAX_GT_ROWS, max_new=MAX_NEW_CLASSES)

    def picture(self, state: LearnPhoto, rows, pending=None, model=None):
        """(the shown photo with its ground truth, notes)."""
        gt, new, problems = self.ground_truth(state, rows, model)
        picture = draw_ground_truth(state.display, state.on_display(gt), new)
        if pending is not None:
            picture = draw_marker(picture, (pending[0] * state.scale, pending[1] * state.scale))
        notes = [f"⚠️ {p}" for p in problems]
        if new:
            notes.insert(0, f"New class{'es' * (len(new) > 1)}, never seen by the model: **{', '.join(new)}**.")
        if not gt.boxes:
            notes.insert(0, "No ground truth yet: type boxes into the table or click two opposite corners on the "
                            "picture.")
        if pending is not None:
            notes.insert(0, f"➕ First corner at ({pending[0]:.0f}, {pending[1]:.0f}): click the opposite corner to "
                            "add a box.")
        return served(picture), "\n\n".join(notes)

    def redraw(self, state, photo, rows, pending=None, model=None):
        """The ground truth changed (the table, a click, Clear): the picture again, and the run's views cleared."""
        state = self.photo_of(state, photo)
        picture, notes = self.picture(state, rows, pending, model)
        return picture, notes, state, *cleared()

    def on_click(self, state, photo, rows, draw_class, pending, evt: gr.SelectData):
        """Two clicks on the picture = two opposite corners of a new box of class `draw_class`."""
        state = self.photo_of(state, photo)
        x, y = evt.index[0], evt.index[1]
        px, py = x / state.scale, y / state.scale
        if pending is None:
            return gr.skip(), (px, py), state
        name = str(draw_class or "").strip() or "object"
        (qx, qy) = pending
        row = [name, round(min(px, qx)), round(min(py, qy)), round(max(px, qx)), round(max(py, qy))]
        return [list(r) for r in (rows or []) if any(v not in (None, "") for v in r)] + [row], None, state

    # ------------------------------------------------------------------------------------------ training
    def steps_of(self, steps) -> int:
        value = LEARN_STEPS if steps is None else check_number("steps", steps, 1, LEARN_MAX_STEPS)
        if value != int(value):
            raise Refused(f"steps must be a whole number from 1 to {LEARN_MAX_STEPS}, got {steps!r}.")
        return int(value)

    def train(self, state, photo, rows, steps, model=None):
        """The Train button: the copy learns, and the page shows it every LEARN_EVERY steps (a generator). Outputs:
        (probabilities, predicted boxes, curves, status, numbers, served detections, trained detections, the
        learned copy)."""
        state = self.photo_of(state, photo)
        steps = self.steps_of(steps)
        name = self.models.name(model)
        chosen = self.models.get(name)
        if chosen.detector is None:
            raise Refused(NO_MODEL)
        gt, new, problems = self.ground_truth(state, rows, name)
        if not gt.boxes:
            raise Refused("No ground truth to learn: give the photo at least one box (the table, or two clicks on "
                          "the picture).")
        if not self.runs.acquire(blocking=False):
            raise Refused(BUSY)
        try:
            display = state.display
            shown = state.on_display(gt)
            skip = gr.skip()
            yield (None, None, None, f"Augmenting the photo {LearnRecipe().views} times and running the frozen "
                                     "layers on the views…", None, None, None, None)
            history: list[LearnStep] = []
            for training, (what, value) in self.copies.run(display, shown, steps, name):
                if what == "views":
                    yield (skip, skip, skip, f"Augmented views ready: {value} of {training.recipe.views}…", skip,
                           skip, skip, skip)
                    continue
                if what == "step":
                    history.append(value)
                    if (value.step % LEARN_EVERY and value.step != 1) or value.step == steps:
                        continue  # the last step is shown by "done", with the final weights
                    yield (*self.progress(training, display, shown, history, steps), skip, skip, skip)
                    continue
                # done or stopped: the final weights, then the copy's detections beside the served model's
                seen = self.progress(training, display, shown, history, steps)
                detector = training.detector({"score_threshold": chosen.default_score})
                learned = Learned(detector, name, list(training.new_classes), history)
                served_picture, trained_picture, summary = self.copies.compare_on(learned, display)
                status = "\n\n".join(filter(None, [value, seen[3], summary]))
                yield (*seen[:3], status, seen[4], served_picture, trained_picture, learned)
        finally:
            self.runs.release()

    def progress(self, training: HeadTraining, display, gt: GroundTruth, history, steps: int):
        """(probabilities picture, predicted boxes picture, curves, status, numbers) of the copy now."""
        probe = training.probe()
        status = progress_markdown(history, steps, training.class_names, training.new_classes)
        return (served(draw_probabilities(display, training.cfg, probe, gt)),
                served(draw_predicted_boxes(display, probe, gt)),
                served(plot_learning(history, steps)) if history else None, status,
                [s.as_dict() for s in history])

    def reset(self):
        """Back to the served model alone: the copy is let go."""
        return (None, None, None, "The copy is gone: the page shows the served model only. Press **Train** to "
                                  "learn again.", None, None, None, None, None, None, "")

    # ------------------------------------------------------------------------------------------ comparing
    def compare(self, learned, other, upload):
        """Another photo (an example, or one's own upload): the served model's detections beside the copy's."""
        if learned is None:
            raise Refused("Train a copy first (or it has expired): press Train above.")
        if upload is not None:
            image = read_upload(upload)
        elif other in example_names():
            image = example_image(other)
        else:
            return gr.skip(), gr.skip(), gr.skip()
        image, _ = fit(image, MATCH_SIDE)
        return self.copies.compare_on(learned, image)

    def learn_api(self, image, rows, steps=None, model=None) -> dict:
        """API (`/learn`): a copy of the model learns `image` with ground-truth `rows` (class, x1, y1, x2, y2 in the
        photo's pixels; a class the model does not know is a new class) for `steps` steps (default LEARN_STEPS).
        Returns every step's numbers (step, loss, loc, conf, positive_probability, hard_negative_background, lr,
        seconds), the new classes, and the served model's and the copy's detections on the photo. Nothing is kept."""
        name = self.models.name(model)
        chosen = self.models.get(name)
        if chosen.detector is None:
            raise Refused(NO_MODEL)
        steps = self.steps_of(steps)
        picture = read_upload(image)
        state = LearnPhoto.of(picture, "api")
        gt, new, problems = self.ground_truth(state, rows if isinstance(rows, list) else [], name)
        if not gt.boxes:
            raise Refused("No ground truth to learn: rows are [class, x1, y1, x2, y2] in the photo's pixels.")
        if not self.runs.acquire(blocking=False):
            raise Refused(BUSY)
        try:
            history, message = [], ""
            for training, (what, value) in self.copies.run(state.display, state.on_display(gt), steps, name):  # noqa: B007
                if what == "step":
                    history.append(value)
                elif what == "stopped":
                    message = value
            learned = Learned(training.detector({"score_threshold": chosen.default_score}), name,
                              list(training.new_classes), history)
        finally:
            self.runs.release()
        mine, theirs = self.copies.detections(learned, state.display)
        s = 1 / state.scale

        def listed(dets):
            return [{"label": d.label, "score": round(d.score, 4), "box": [round(v * s, 1) for v in d.box]}
                    for d in dets]

        return {"model_name": name, "steps": [h.as_dict() for h in history], "new_classes": learned.new_classes,
                "positives": int(training.matched.positives.sum()), "views": training.recipe.views,
                "stopped": message, "ground_truth_problems": problems,
                "score_threshold": chosen.default_score,
                "detections": {"served": listed(mine), "trained": listed(theirs)}}

    # ------------------------------------------------------------------------------------------ the page
    def build(self, matching: PhotoInputs | None = None, choice: gr.components.Component | None = None):
        """The tab's widgets and events (inside a gr.Blocks). `matching`: the Matching tab's photo and ground
        truth, offered as a source; `choice`: the page's model choice (a name of `self.models`), or None."""
        chosen = [choice] if choice is not None else []
        model = self.models.default
        first = LearnPhoto.of(example_image("coffee"), "coffee")
        first_rows = learning_rows("coffee")
        first_picture, first_notes = self.picture(first, first_rows)
        gr.Markdown(INTRO)
        if model.detector is None:
            gr.Markdown(f"⚠️ {NO_MODEL}")
        # The photo starts as the coffee example (the picture and table are drawn once, for every visitor); its
        # state is made from the dropdown when a handler first needs it (`photo_of`).
        state = gr.State(None, time_to_live=STATE_TTL_S)
        pending = gr.State(None)
        learned = gr.State(None, time_to_live=STATE_TTL_S)
        with gr.Row():
            with gr.Column(scale=2, min_width=280):
                photo = gr.Dropdown(example_names() + [FROM_MATCHING] * (matching is not None), value="coffee",
                                    label="Photo with ground truth", elem_id="learn-photo")
                upload = gr.Image(type="filepath", image_mode=None, label="…or your own photo",
                                  sources=["upload", "clipboard"], height=160, elem_id="learn-upload")
                table = gr.Dataframe(value=first_rows, headers=GT_HEADERS,
                                     datatype=["str", "number", "number", "number", "number"], type="array",
                                     interactive=True, column_count=5, elem_id="learn-table",
                                     label="Ground truth (pixels). A class the model does not know is a new class")
                with gr.Row():
                    draw_class = gr.Dropdown(list(model.class_names), value="mug", allow_custom_value=True,
                                             label="Class of drawn boxes (type a new one)", scale=2)
                    clear = gr.Button("Clear ground truth", scale=1, elem_id="learn-clear")
                steps = gr.Slider(1, LEARN_MAX_STEPS, value=LEARN_STEPS, step=1, label="Steps",
                                  elem_id="learn-steps")
                with gr.Row():
                    train = gr.Button("Train", variant="primary", elem_id="learn-train")
                    reset = gr.Button("Reset", elem_id="learn-reset")
            with gr.Column(scale=3):
                picture = drawn_picture("The photo and its ground truth (click two corners to add a box)",
                                        value=first_picture, format="jpeg", elem_id="learn-input", height=420)
                message = gr.Markdown(first_notes, elem_id="learn-message")
        status, probabilities, boxes, curves, served_out, trained_out = run_views()
        other, other_upload, other_message, other_served, other_trained = other_photo_section()
        with gr.Accordion("The numbers, step by step (what the `learn` API returns)", open=False):
            numbers = gr.JSON(elem_id="learn-numbers")

        kw = dict(api_visibility="private", concurrency_limit=4, concurrency_id="pictures")
        views = [probabilities, boxes, curves, status, numbers, served_out, trained_out]  # `cleared`
        sources = [photo, *([matching.state, matching.table] if matching is not None else [])]
        photo.change(self.load_photo, sources, [state, table, picture, message, pending, upload, *views], **kw)
        upload.upload(self.load_upload, [upload], [state, table, picture, message, pending, photo, *views],
                      preprocess=False, **kw)
        redraw_in, redraw_out = [state, photo, table, pending, *chosen], [picture, message, state, *views]
        table.input(self.redraw, redraw_in, redraw_out, trigger_mode="always_last", **kw)
        clear.click(lambda: ([], None), None, [table, pending], **kw).then(self.redraw, redraw_in, redraw_out, **kw)
        picture.select(self.on_click, [state, photo, table, draw_class, pending], [table, pending, state],
                       **kw).then(self.redraw, redraw_in, redraw_out, **kw)
        outputs = [*views, learned]
        # Training runs on the page's network slots ("network", as Detect), one run at a time (self.runs).
        train.click(self.train, [state, photo, table, steps, *chosen], outputs, api_visibility="private",
                    concurrency_id="network", show_progress="minimal")
        reset.click(self.reset, None, [*outputs, other_served, other_trained, other_message],
                    api_visibility="private", queue=False)
        compare_out = [other_served, other_trained, other_message]
        other.change(self.compare, [learned, other, other_upload], compare_out, api_visibility="private",
                     concurrency_id="network", preprocess=False)
        other_upload.upload(self.compare, [learned, other, other_upload], compare_out, api_visibility="private",
                            concurrency_id="network", preprocess=False)
        # API (`/learn`): the image as a file, the rows as plain JSON, the steps; the per-step numbers back.
        api_rows = gr.JSON(visible=False)
        gr.Button(visible=False).click(self.learn_api, [upload, api_rows, steps, *chosen], [gr.JSON(visible=False)],
                                       api_name="learn", preprocess=False, concurrency_id="network")
