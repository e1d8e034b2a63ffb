"""The Augmentation tab: one training photo through SSD's data augmentation, step by step (photometric
distortion, zoom out, min-IoU crop, flip, resize), with the default boxes its ground truth matches after each step.
The steps are training's own code (`ssd.augment.augment`, through `visualize.augment`). It needs no model."""

from __future__ import annotations

import random

import gradio as gr

from visualize.augment import (
    augmentation_steps,
    draw_step,
    match_step,
    positives_by_step,
    steps_markdown,
)
from visualize.examples import example_annotations, example_for, example_image, example_names, examples_for
from visualize.matching import GroundTruth, parse_ground_truth

from .default_box_choices import CONFIG_LABEL, config_choices, own_label
from .demo_models import DemoModel
from .links import PhotoInputs
from .settings import MAX_GT_ROWS
from .visitor_input import Refused, served

FROM_MATCHING = "the Matching tab's photo and ground truth"
# The crop's minimum IoU, as the dropdown shows it -> ssd.augment.augment's min_iou.
MIN_IOU = {
    "random, as in training": "random",
    "no crop (the whole picture)": None,
    **{f"{v:g}": v for v in (0.1, 0.3, 0.5, 0.7, 0.9)},
    "any patch (no IoU constraint)": "any",
}
MAX_SEED = 2**31 - 1
# The first view: the motorbike zoomed out 3x (its positives move to the fine layers), then a crop with IoU >= 0.3
# that makes it large again (coarse layers), then a flip.
DEFAULT_SEED = 6
STEP_NAMES = ("input", "photometric distortion", "zoom out", "min-IoU crop", "horizontal flip", "resize")
EXPAND_LABEL = "Zoom-out ratio (canvas side / photo side)"
EXPAND_RANDOM_LABEL = "Zoom-out ratio: drawn at random (ticked above)"
INTRO = """**Data augmentation** (paper §2.2) shows the network every training photo differently in every epoch.
In the paper's Table 2 it is worth **+8.8 mAP** (65.5 → 74.3 on VOC2007 test). Each photo goes through:
1. **photometric distortion**: brightness, contrast, saturation, hue and channel order, each with p = ½;
2. **zoom out** ("expansion", §3.6): the photo on a canvas up to 4× as wide and high, filled with the mean colour
   (p = ½). Objects become small and match the fine layers (the first source layer: conv4_3 in the paper's
   VGG16); the paper gained 2–3 mAP with it, mostly on small objects;
3. **min-IoU crop**: a patch (sides 0.3–1 of the picture's, aspect ½–2) whose IoU with some object reaches 0.1, 0.3,
   0.5, 0.7 or 0.9, or any patch, or no crop (one of these drawn at random). Objects become large and match the
   coarse layers; those whose centre is outside the patch are dropped;
4. **horizontal flip** (p = ½), then 5. the **resize** to the network's square input.

After each step: the ground truth (white) and the default boxes it matches at IoU ≥ 0.5 (the Matching tab's
matching), coloured by source layer. This runs `ssd.augment`, the code training runs: with the crop and the
zoom-out left random, the last picture is exactly a training input. Same seed, same pictures."""


def expand_slider(random_zoom: bool) -> gr.Slider:
    """The zoom-out ratio slider: set by hand, or locked and saying that it is not used while the zoom-out is
    random (a disabled Gradio slider still looks much like an active one)."""
    return gr.Slider(interactive=not random_zoom, label=EXPAND_RANDOM_LABEL if random_zoom else EXPAND_LABEL)


class AugmentTab:
    def __init__(self, model: DemoModel):
        self.model = model
        self.configs = config_choices(model.config)
        # The example the tab starts from (and an unknown name falls back to): one whose objects are all of the
        # model's classes (`visualize.examples.examples_for`), or None when there is none.
        self.first_example = example_for(model.class_names, "motorcycle")

    def nothing_yet(self) -> str:
        """Why there is nothing to show, and what to do: the Matching tab has no photo (none yet, or its state
        expired) and no example fits the model."""
        if self.first_example is None:
            return (f"No example photo has only this model's classes ({', '.join(self.model.class_names)}): "
                    "upload a photo of your own on the Matching tab and draw its boxes there; this tab then "
                    f"shows it (*{FROM_MATCHING}*).")
        return "The Matching tab has no photo yet: open it and pick or upload one."

    def source(self, photo, match_state=None, match_rows=None) -> tuple:
        """(image, GroundTruth, notes) of an example or of the Matching tab's photo (as shown there: at most
        800 px) and its ground-truth table."""
        names = self.model.class_names
        if photo == FROM_MATCHING:
            if match_state is None:
                raise Refused(self.nothing_yet())
            gt, problems = parse_ground_truth(match_rows, names, match_state.width, match_state.height,
                                              max_rows=MAX_GT_ROWS)
            image, s = match_state.display, match_state.scale
            W, H = image.size
            boxes = [(min(x1 * s, W), min(y1 * s, H), min(x2 * s, W), min(y2 * s, H)) for x1, y1, x2, y2 in gt.boxes]
            return image, GroundTruth(gt.labels, boxes, W, H), problems
        name = photo if photo in example_names() else self.first_example
        if name is None:
            raise Refused(f"Pick an example photo ({', '.join(example_names())}) or {FROM_MATCHING}.")
        image = example_image(name)
        rows = [[label, *box] for label, box in example_annotations(name)]
        gt, problems = parse_ground_truth(rows, names, image.width, image.height)
        return image, gt, problems

    def render(self, photo, config_name, min_iou, expand_random, expand_ratio, seed, match_state=None,
               match_rows=None):
        """The page's outputs: each step's picture (input, then steps 1 to 5 in order), the notes and what each
        step drew, the positives per layer and step. With no photo to start from (no example fits the model, and
        the Matching tab has none yet) the pictures stay empty and the notes say what to do: not an error."""
        if photo in (None, FROM_MATCHING) and match_state is None:
            return (*[None] * len(STEP_NAMES), self.nothing_yet(), [])
        pictures, notes, table = self.steps(photo, config_name, min_iou, expand_random, expand_ratio, seed,
                                            match_state, match_rows)
        return (*pictures, notes, table)

    def steps(self, photo, config_name, min_iou, expand_random, expand_ratio, seed, match_state=None,
              match_rows=None):
        """(the steps' pictures, notes and what each step drew, positives per layer and step); the `/augment`
        API's answer."""
        cfg = self.configs.get(config_name) or self.model.config
        if min_iou not in MIN_IOU:
            raise Refused(f"Unknown crop choice {min_iou!r}; choose one of {list(MIN_IOU)}.")
        try:
            seed = min(max(int(seed), 0), MAX_SEED)
            ratio = None if expand_random else min(max(float(expand_ratio), 1.0), 4.0)
        except (TypeError, ValueError):
            raise Refused("The seed and the zoom-out ratio must be numbers.") from None
        image, gt, problems = self.source(photo, match_state, match_rows)
        names = self.model.class_names
        steps = augmentation_steps(image, gt, cfg, names, seed=seed, min_iou=MIN_IOU[min_iou], expand_ratio=ratio)
        assert len(steps) == len(STEP_NAMES), [s.name for s in steps]
        matched = [match_step(cfg, step, names, cfg.match_threshold) for step in steps]
        matches = [m for _, m in matched]
        # Each picture carries its title (step_title: its number, step and positives) in a strip above it.
        pictures = [served(draw_step(i, step, cfg, g, m)) for i, (step, (g, m)) in enumerate(zip(steps, matched))]
        notes = [f"⚠️ {p}" for p in problems]
        if not gt.boxes:
            notes.append("No ground truth: nothing to match, and an image without objects is never cropped.")
        notes.append(f"**{cfg.name}**, seed {seed}:\n\n" + steps_markdown(cfg, steps, matches))
        return pictures, "\n\n".join(notes), positives_by_step(cfg, steps, matches)[1]

    def build(self, matching: PhotoInputs | None = None):
        """The tab's widgets and events (inside a gr.Blocks). `matching`: the Matching tab's photo and ground
        truth, if they can be used here. Returns (inputs, outputs) of `render`, for the event that shows the tab."""
        gr.Markdown(INTRO)
        from_matching = matching is not None
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                # The examples whose objects are all of the model's classes (another's would be rows it cannot
                # read); with none, the Matching tab's photo, which a visitor uploads.
                first = self.first_example or (FROM_MATCHING if from_matching else None)
                photo = gr.Dropdown(examples_for(self.model.class_names) + [FROM_MATCHING] * from_matching,
                                    value=first, label="Photo with ground truth", elem_id="augment-photo")
                config = gr.Radio(list(self.configs), value=own_label(self.configs, self.model.config),
                                  label=CONFIG_LABEL)
                min_iou = gr.Dropdown(list(MIN_IOU), value="0.3",
                                      label="Crop: minimum IoU of the patch with an object", elem_id="augment-min-iou")
                expand_random = gr.Checkbox(value=False, label="Zoom out at random, as in training (p = ½, ratio 1–4)")
                expand = gr.Slider(1, 4, value=3, step=0.1, label=EXPAND_LABEL, elem_id="augment-expand")
                with gr.Row():
                    seed = gr.Number(value=DEFAULT_SEED, precision=0, minimum=0, maximum=MAX_SEED, label="Seed",
                                     elem_id="augment-seed", scale=2)
                    reroll = gr.Button("Another seed", scale=1)
            with gr.Column(scale=3):
                # Titled above, not by Gradio's badge, which would cover the first step's title; each picture
                # carries its number and step in a strip of its own, and they read in order, three to a row.
                gr.Markdown("**Each step in order: ground truth (white) and matched default boxes**")
                pictures = []
                for first in range(0, len(STEP_NAMES), 3):
                    with gr.Row():
                        pictures += [gr.Image(label=f"{i} · {STEP_NAMES[i]}", show_label=False, interactive=False,
                                              format="jpeg", elem_id=f"augment-step-{i}", min_width=160, height=280,
                                              buttons=["fullscreen"])
                                     for i in range(first, min(first + 3, len(STEP_NAMES)))]
        table = gr.Dataframe(headers=["source layer", "feature map", *(f"{i} · {n}" for i, n in enumerate(STEP_NAMES))],
                             interactive=False, label="Positives per source layer after each step",
                             elem_id="augment-table")
        message = gr.Markdown(elem_id="augment-message")
        inputs = [photo, config, min_iou, expand_random, expand, seed]
        if from_matching:
            inputs += [matching.state, matching.table]
        outputs = [*pictures, message, table]
        kw = dict(api_visibility="private", concurrency_limit=4, concurrency_id="pictures")
        for control in inputs[:6]:
            control.change(self.render, inputs, outputs, trigger_mode="always_last", show_progress="hidden", **kw)
        # API (`/augment`): the same steps for an example photo, by name (the Matching tab's photo is the page's),
        # the pictures as one gallery.
        gr.Button(visible=False).click(self.steps, inputs[:6], [gr.Gallery(visible=False, format="jpeg"), message,
                                                                table], api_name="augment", concurrency_limit=4,
                                       concurrency_id="pictures")
        expand_random.change(expand_slider, [expand_random], [expand], api_visibility="private")
        reroll.click(lambda: random.randint(0, MAX_SEED), None, [seed], api_visibility="private")
        return inputs, outputs
