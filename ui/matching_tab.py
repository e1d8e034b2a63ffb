"""The Matching tab: which default boxes become positives for given ground truth (forced best prior + IoU ≥
threshold), IoU heat maps, the 3:1 hard negatives of a real forward pass, one positive's encoded offsets, and the
loss term by term (`ui.matching_loss`). With two models or more, the page's model choice says whose forward pass (and
whose config) the tab uses: each handler takes it as its last input."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr
import torch
from PIL import Image

import ssd
from visualize.draw import draw_marker, fit
from visualize.examples import example_annotations, example_for, example_image, examples_for
from visualize.matching import (
    POSITIVES_HEADERS,
    draw_matches,
    draw_offsets,
    hard_negatives_from_scores,
    iou_heatmaps,
    match_ground_truth,
    offsets_markdown,
    parse_ground_truth,
    positive_choices,
    positives_per_layer,
)

from .default_box_choices import CONFIG_LABEL, config_choices, own_label
from .demo_models import NO_MODEL, DemoModel, DemoModels
from .links import Controls, PhotoInputs
from .matching_loss import NO_LOSS, loss_data, loss_page, loss_section
from .pictures import drawn_picture
from .settings import MATCH_SIDE, MAX_GT_ROWS, STATE_TTL_S
from .visitor_input import check_parameters, from_jpeg, read_upload, served, to_jpeg, upload_source

GT_HEADERS = ["class", "x1", "y1", "x2", "y2"]
INTRO = ("Training assigns each ground-truth box its best default box (forced), plus every default box with IoU ≥ "
         "the threshold. Positives are coloured by the source layer they come from.")


def example_picker(class_names) -> gr.Dropdown:
    """The example photos of a model of `class_names`: only those whose objects are all of its classes (another
    one's ground truth would be rows the model cannot read), starting at the motorcycle where it fits. With none,
    the tab starts without a photo and says what to do instead (`no_example_note`)."""
    examples = examples_for(class_names)
    return gr.Dropdown(examples, value=example_for(class_names, "motorcycle"),
                       label="Example photo (with hand-made ground truth)",
                       info=None if examples else f"None has only this model's classes ({', '.join(class_names)}).")


def no_example_note(class_names) -> str:
    """What the tab says when no example photo has only the model's classes: what to do instead."""
    return (f"No example photo has only this model's classes ({', '.join(class_names)}), so the tab starts "
            "without one: upload a photo of your own (on the left), then draw its boxes by clicking two opposite "
            "corners on the picture, or type them into the ground-truth table.")


def index_of(choice) -> int | None:
    """A picker's value as an index (a ground-truth box, a default box), or None if it is none."""
    try:
        index = int(choice)
    except (TypeError, ValueError, OverflowError):
        return None
    return index if index >= 0 and index == choice else None


def pickers_section() -> tuple:
    """A ground truth's IoU heat map and a positive's encoded offsets, each with its picker: (ground-truth picker,
    heat map, positive picker, offsets' text, offsets' picture)."""
    with gr.Row():
        # Both pickers take any value, and the handlers check it (`index_of`): after a new photo their
        # choices change while the page may still send the old value, which Gradio's own check would refuse.
        gt_pick = gr.Dropdown([], label="IoU heat map of ground truth", scale=1, min_width=200,
                              allow_custom_value=True)
        heat = gr.Image(label="IoU with every default box, per feature map", interactive=False, format="png",
                        show_label=False, scale=5, elem_id="match-heatmap")
    with gr.Row():
        with gr.Column(scale=2):
            pos_pick = gr.Dropdown([], label="One positive: its encoded offsets", allow_custom_value=True)
            offsets_text = gr.Markdown()
        with gr.Column(scale=2):
            offsets_image = drawn_picture("Default box, ground truth, decode(encode(g))", format="jpeg")
    return gt_pick, heat, pos_pick, offsets_text, offsets_image


@dataclass
class MatchState:
    """The photo being matched, per browser session: the picture as shown (as JPEG: a tenth of its pixels' size),
    its scale from the photo's pixels, the photo's size, and each model's background probabilities once hard
    negatives asked for them (one forward pass per photo and model)."""

    jpeg: bytes
    display_height: int
    scale: float
    width: int
    height: int
    name: str
    background: dict[str, torch.Tensor] = field(default_factory=dict)  # model name -> (1, N)
    loss_of: tuple | None = None  # what the loss section shows the loss of (`MatchingTab.loss_key`), if anything

    @classmethod
    def of(cls, image: Image.Image, name: str) -> MatchState:
        display, scale = fit(image, MATCH_SIDE)
        return cls(to_jpeg(display), display.height, scale, image.width, image.height, name)

    @property
    def display(self) -> Image.Image:
        return from_jpeg(self.jpeg)


# An editable Gradio table lets a visitor rename its columns by clicking a header (unless the column is read-only
# too). The ground-truth table's headers are its format: a header click does nothing.
STATIC_HEADERS = "<style>.static-headers thead th { pointer-events: none; }</style>"


class MatchingTab:
    def __init__(self, models: DemoModel | DemoModels):
        self.models = DemoModels.of(models)
        self.photo_inputs: PhotoInputs | None = None  # once built, for the Augmentation tab

    @property
    def model(self) -> DemoModel:
        """The default model."""
        return self.models.default

    @property
    def cfg(self):
        """The default model's config."""
        return self.model.config

    @property
    def configs(self) -> dict[str, ssd.SSDConfig]:
        """The default model's config choices."""
        return self.configs_of()

    def configs_of(self, model=None) -> dict[str, ssd.SSDConfig]:
        """The config choices with the chosen model's own config (`model`: a name of `self.models`)."""
        return config_choices(self.models.get(model).config)

    def config_for(self, name, model=None) -> ssd.SSDConfig:
        """The config of a choice (None: the chosen model's)."""
        own = self.models.get(model).config
        return self.configs_of(model).get(name, own) if name is not None else own

    def config_radio(self, model=None, value=None) -> gr.Radio:
        """SSD300 / SSD512, marking the chosen model's own config, and starting at it (or at `value`, a label that
        is still a choice)."""
        chosen = self.models.get(model)
        configs = self.configs_of(model)
        mine = own_label(configs, chosen.config)
        suffix = " (this model)" if chosen.detector is not None else ""
        return gr.Radio([(label + suffix * (label == mine), label) for label in configs],
                        value=value if value in configs else mine, label=CONFIG_LABEL)

    def on_model(self, model, config):
        """The page's model choice changed: the config choices mark that model's own config."""
        return self.config_radio(model, config)

    def no_negatives_note(self, cfg: ssd.SSDConfig, model=None) -> str:
        own = self.models.get(model).config
        return (f"Hard negatives need the network's scores for every default box, and this model "
                f"({own.name}) scores its {own.num_default_boxes}, not the {cfg.num_default_boxes} of "
                f"{cfg.name}: switch back to its config to see them.")

    def ground_truth(self, state: MatchState, rows, model=None):
        return parse_ground_truth(rows, self.models.get(model).class_names, state.width, state.height,
                                  max_rows=MAX_GT_ROWS)

    def load_example(self, name):
        """(state, ground-truth rows, pending corner, cleared upload, class of drawn boxes): boxes drawn on an
        example start as the class of its first object (a cat for the cat), not always "person"."""
        if name is None:  # the dropdown was cleared by an upload of one's own photo
            return (gr.skip(),) * 5
        rows = [[label, *box] for label, box in example_annotations(name)]
        # Only a class the drawing dropdown offers: any other would be a warning in the server's log.
        fits = bool(rows) and rows[0][0] in self.model.class_names
        draw_class = gr.update(value=rows[0][0]) if fits else gr.skip()
        return MatchState.of(example_image(name), name), rows, None, gr.Image(value=None), draw_class

    def load_upload(self, value):
        if value is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        image = read_upload(value)
        # The example dropdown lets go of its photo, so that picking that example again loads it.
        return MatchState.of(image, upload_source(value)[1]), [], None, gr.Dropdown(value=None)

    def hard_negatives(self, state: MatchState, m, model=None):
        """(the hard negatives of the chosen model's forward pass on the photo, a note); a mask of (1, N)."""
        name = self.models.name(model)
        chosen = self.models.get(name)
        if chosen.detector is None:
            return None, "Hard negatives need the model's confidences (a real forward pass), and no model is loaded."
        if name not in state.background:  # one forward pass per photo and model; the ground truth changes nothing
            state.background[name] = chosen.predict(state.display).scores[..., 0].cpu()
        cfg = chosen.config
        neg = hard_negatives_from_scores(cfg, state.background[name], m)
        pos = int(m.positives.sum())
        whose = f"the forward pass of **{self.models.titles[name]}**" if self.models.switchable else \
            "this model's forward pass"
        return neg, (f"Hard negatives: the **{int(neg.sum())}** background default boxes with the highest "
                     f"confidence loss in {whose} ({cfg.neg_pos_ratio}:1 for {pos} positives).")

    def loss_key(self, state: MatchState, gt, threshold, cfg: ssd.SSDConfig, model=None) -> tuple:
        """What the loss of a photo (the state's) is the loss of: its ground truth as read, the IoU threshold, the
        default boxes and the model."""
        return tuple(gt.labels), tuple(tuple(b) for b in gt.boxes), float(threshold), cfg, self.models.name(model)

    def refresh(self, state, rows, threshold, show_negatives, gt_choice, pos_choice, pending=None, note=None,
                config=None, model=None):
        """Everything on the tab that depends on the photo, the ground truth, the threshold, the config
        (`config`: a label of `self.configs_of(model)`; None: the model's) and the model (a name of `self.models`;
        None: the default), whose forward pass gives the hard negatives. `note`: a message from the step before
        (e.g. detections used as ground truth), shown first and then cleared. The loss section (the last three
        outputs) is left as it is while it shows the loss of this photo, ground truth, threshold, config and
        model, and cleared otherwise: after any other action it would show another photo's terms."""
        if state is None:
            return (gr.skip(),) * 13
        chosen = self.models.get(model)
        cfg = self.config_for(config, model)
        gt, problems = self.ground_truth(state, rows, model)
        if state.loss_of == self.loss_key(state, gt, threshold, cfg, model):
            loss = (gr.skip(),) * 3
        else:
            state.loss_of, loss = None, NO_LOSS
        notes = [f"⚠️ {p}" for p in problems]
        m = match_ground_truth(cfg, gt, chosen.class_names, threshold)
        negatives = None
        if show_negatives and gt.boxes and cfg != chosen.config:
            notes.append(self.no_negatives_note(cfg, model))
        elif show_negatives and gt.boxes:
            negatives, message = self.hard_negatives(state, m, model)
            notes.append(message)
        picture = draw_matches(state.display, cfg, m, gt, negatives=negatives)
        if pending is not None:  # the first corner of a box being drawn
            picture = draw_marker(picture, (pending[0] * state.scale, pending[1] * state.scale))
        headers, table = positives_per_layer(cfg, m)
        if not gt.boxes:
            notes.insert(0, "No ground truth yet: pick an example, type boxes into the table, click two opposite "
                            "corners on the picture, or use the current detections.")
        else:
            n_gt = len(gt.boxes)
            notes.insert(0, f"**{int(m.positives.sum())}** positives for {n_gt} ground-truth "
                            f"box{'es' * (n_gt != 1)} at IoU ≥ {float(threshold):.2f}; each ground truth's best "
                            "default box is forced positive (thick dashed), whatever its IoU.")
        if note:
            notes.insert(0, note)
        if pending is not None:
            notes.insert(0, f"➕ First corner at ({pending[0]:.0f}, {pending[1]:.0f}): click the opposite corner to "
                            "add a box.")
        gt_choices = [(f"GT {i}: {label}", i) for i, label in enumerate(gt.labels)]
        gt_choice = index_of(gt_choice)
        gt_value = gt_choice if gt_choice is not None and gt_choice < len(gt.labels) else (0 if gt.labels else None)
        pos = positive_choices(cfg, m)
        pos_ids = [i for _, i in pos]
        pos_value = index_of(pos_choice) if index_of(pos_choice) in pos_ids else (pos_ids[0] if pos_ids else None)
        heat = self.heatmap(gt, gt_value, threshold, cfg)
        offsets_md, offsets_img = self.offsets(state, gt, m, pos_value, cfg)
        return (served(picture), "\n\n".join(notes), table, gr.Dropdown(choices=gt_choices, value=gt_value), heat,
                gr.Dropdown(choices=pos, value=pos_value), offsets_md, offsets_img, state, None, *loss)

    def heatmap(self, gt, index, threshold, cfg=None):
        if index is None or index >= len(gt.boxes):
            return None
        return served(iou_heatmaps(cfg or self.cfg, gt.normalised()[index], float(threshold)))

    def offsets(self, state: MatchState, gt, m, index, cfg=None):
        if index is None:
            return "No positive default box to encode.", None
        cfg = cfg or self.cfg
        return offsets_markdown(cfg, m, index), served(draw_offsets(state.display, cfg, m, gt, index))

    def heatmap_only(self, state, rows, threshold, gt_choice, config=None, model=None):
        gt_choice = index_of(gt_choice)
        if state is None or gt_choice is None:
            return None
        gt, _ = self.ground_truth(state, rows, model)
        return self.heatmap(gt, gt_choice, threshold, self.config_for(config, model))

    def offsets_only(self, state, rows, threshold, pos_choice, config=None, model=None):
        pos_choice = index_of(pos_choice)
        if state is None or pos_choice is None:
            return gr.skip(), gr.skip()
        cfg = self.config_for(config, model)
        gt, _ = self.ground_truth(state, rows, model)
        m = match_ground_truth(cfg, gt, self.models.get(model).class_names, threshold)
        if pos_choice >= m.positives.shape[1] or not bool(m.positives[0, pos_choice]):
            return gr.skip(), gr.skip()
        return self.offsets(state, gt, m, pos_choice, cfg)

    def on_click(self, state, rows, draw_class, pending, evt: gr.SelectData):
        """Two clicks on the picture = two opposite corners of a new ground-truth box."""
        if state is None:
            return gr.skip(), gr.skip(), gr.skip()
        x, y = evt.index[0], evt.index[1]
        if y >= state.display_height:  # the legend strip under the picture
            return gr.skip(), gr.skip(), gr.skip()
        px, py = x / state.scale, y / state.scale
        if pending is None:
            return gr.skip(), (px, py), f"First corner at ({px:.0f}, {py:.0f}); click the opposite corner."
        (qx, qy) = pending
        row = [draw_class, round(min(px, qx)), round(min(py, qy)), round(max(px, qx)), round(max(py, qy))]
        return [list(r) for r in (rows or []) if any(v not in (None, "") for v in r)] + [row], None, \
            f"Added {draw_class} ({row[1]}, {row[2]}, {row[3]}, {row[4]})."

    def detections_as_gt(self, state, score_threshold, nms_threshold, model=None):
        """The chosen model's detections on this photo, at the Detect tab's thresholds, as ground-truth rows; and
        a note that says what was done (shown by the refresh that follows)."""
        if state is None:
            return gr.skip(), "Pick an image first."
        name = self.models.name(model)
        chosen = self.models.get(name)
        if chosen.detector is None:
            return gr.skip(), NO_MODEL
        cfg = chosen.config
        score_threshold, nms_threshold, _, _ = check_parameters(score_threshold, nms_threshold, cfg.top_k, None,
                                                                chosen.class_names, cfg.top_k)
        dets = chosen.detector.postprocess(chosen.predict(state.display), score_threshold, nms_threshold)
        where = f"score ≥ {score_threshold:.2f}, the Detect tab's score threshold"
        whose = f"the model's ({self.models.titles[name]})" if self.models.switchable else "the model's"
        if not dets:
            return gr.skip(), (f"⚠️ The model finds nothing here ({where}): lower that slider on the Detect tab "
                               "and try again.")
        rows = [[d.label, *(round(v / state.scale) for v in d.box)] for d in dets]
        return rows, (f"Using {whose} {len(rows)} detection{'s' * (len(rows) != 1)} ({where}) as ground "
                      "truth.")

    def loss_view(self, state, rows, threshold, config=None, model=None):
        """Eq. (1) for this photo, its ground truth and the chosen model's forward pass: (the sum worked through,
        the positives' terms, the hard negatives by their loss). The state remembers what it is the loss of, so
        that the refresh after any change clears it."""
        if state is None:
            return "Pick an image first.", None, None
        chosen, cfg = self.models.get(model), self.config_for(config, model)
        if chosen.detector is None:
            return f"⚠️ {NO_MODEL}", None, None
        if cfg != chosen.config:
            return self.no_negatives_note(cfg, model), None, None
        gt, problems = self.ground_truth(state, rows, model)
        state.loss_of = self.loss_key(state, gt, threshold, cfg, model)
        whose = f", through **{self.models.titles[self.models.name(model)]}**" if self.models.switchable else ""
        return loss_page(chosen, cfg, state.display, gt, problems, threshold, state.name, whose)

    def loss_api(self, image, rows, threshold=None, model=None) -> dict:
        """API (`/loss`): the MultiBox loss of the model's forward pass on `image` against ground-truth `rows`
        (class, x1, y1, x2, y2 in the photo's pixels) at the IoU `threshold` (default: the config's), every term
        listed (`ui.matching_loss.loss_data`)."""
        return loss_data(self.models.get(model), image, rows, threshold)

    def build(self, detect: Controls, choice: gr.components.Component | None = None):
        """The tab's widgets and events (inside a gr.Blocks). `choice`: the page's model choice (its value a name
        of `self.models`), or None for the default model only. Returns the events the page's load event chains:
        (load_example inputs, outputs), (refresh inputs, outputs)."""
        cfg, names = self.cfg, self.model.class_names
        chosen = [choice] if choice is not None else []
        gr.Markdown(INTRO)
        state = gr.State(None, time_to_live=STATE_TTL_S)
        pending = gr.State(None)
        note = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2, min_width=280):
                photo = example_picker(names)
                upload = gr.Image(type="filepath", image_mode=None, label="…or your own photo",
                                  sources=["upload", "clipboard"], height=160, elem_id="match-upload")
                # Its cells take edits, its headers none (STATIC_HEADERS): nothing would read an edited header.
                gt_table = gr.Dataframe(headers=GT_HEADERS, datatype=["str", "number", "number", "number", "number"],
                                        type="array", interactive=True, column_count=5,
                                        label="Ground truth (pixels; edit, add rows, or click two corners on the "
                                              "picture)", elem_id="match-gt", elem_classes=["static-headers"])
                with gr.Row():
                    draw_class = gr.Dropdown(names, value="person" if "person" in names else names[0],
                                             label="Class of drawn boxes", scale=2)
                    clear = gr.Button("Clear ground truth", scale=1)
                use_dets = gr.Button("Use current detections as ground truth")
                config = self.config_radio()
                threshold = gr.Slider(0.1, 0.9, value=cfg.match_threshold, step=0.05,
                                      label="IoU threshold for positives")
                show_neg = gr.Checkbox(value=False, label=f"Show the {cfg.neg_pos_ratio}:1 hard negatives (one "
                                                          "forward pass of the model)")
            with gr.Column(scale=3):
                image = drawn_picture("Matched default boxes (click two corners to add a box)",
                                 elem_id="match-output", format="jpeg")
                message = gr.Markdown(None if examples_for(names) else no_example_note(names),
                                      elem_id="match-message")
                table = gr.Dataframe(headers=list(POSITIVES_HEADERS), interactive=False,
                                     label="Positives per source layer", elem_id="match-table")
        gt_pick, heat, pos_pick, offsets_text, offsets_image = pickers_section()
        loss_button, loss_text, loss_pos, loss_neg = loss_section()
        loss_json = gr.JSON(visible=False)
        gr.HTML("", head=STATIC_HEADERS, js_on_load=None, container=False, padding=False)
        refresh_in = [state, gt_table, threshold, show_neg, gt_pick, pos_pick, pending, note, config, *chosen]
        self.photo_inputs = PhotoInputs(state, gt_table)
        refresh_out = [image, message, table, gt_pick, heat, pos_pick, offsets_text, offsets_image, state, note,
                       loss_text, loss_pos, loss_neg]
        load_out = [state, gt_table, pending, upload, draw_class]
        kw = dict(api_visibility="private", concurrency_limit=4, concurrency_id="pictures")
        photo.change(self.load_example, [photo], load_out, **kw).then(self.refresh, refresh_in, refresh_out, **kw)
        upload.upload(self.load_upload, [upload], [state, gt_table, pending, photo], preprocess=False, **kw).then(
            self.refresh, refresh_in, refresh_out, **kw)
        clear.click(lambda: ([], None), None, [gt_table, pending], **kw).then(self.refresh, refresh_in, refresh_out,
                                                                              **kw)
        use_dets.click(self.detections_as_gt, [state, detect.score, detect.nms, *chosen], [gt_table, note],
                       **kw).then(
            self.refresh, refresh_in, refresh_out, **kw)
        image.select(self.on_click, [state, gt_table, draw_class, pending], [gt_table, pending, message], **kw).then(
            self.refresh, refresh_in, refresh_out, **kw)
        gt_table.input(self.refresh, refresh_in, refresh_out, trigger_mode="always_last", **kw)
        for control in (threshold, show_neg, config):
            control.change(self.refresh, refresh_in, refresh_out, trigger_mode="always_last", show_progress="hidden",
                           **kw)
        gt_pick.input(self.heatmap_only, [state, gt_table, threshold, gt_pick, config, *chosen], [heat], **kw)
        pos_pick.input(self.offsets_only, [state, gt_table, threshold, pos_pick, config, *chosen],
                       [offsets_text, offsets_image], **kw)
        loss_button.click(self.loss_view, [state, gt_table, threshold, config, *chosen],
                          [loss_text, loss_pos, loss_neg], **kw)
        # The API takes its rows as plain JSON (a list of [class, x1, y1, x2, y2]), not as the table's payload.
        api_rows = gr.JSON(visible=False)
        gr.Button(visible=False).click(self.loss_api, [upload, api_rows, threshold, *chosen], [loss_json],
                                       api_name="loss", preprocess=False, concurrency_limit=4,
                                       concurrency_id="pictures")
        if choice is not None and self.models.switchable:
            # Another model: its own config marked, its forward pass for the hard negatives.
            choice.change(self.on_model, [choice, config], [config], **kw).then(self.refresh, refresh_in,
                                                                               refresh_out, **kw)
        return ([photo], load_out), (refresh_in, refresh_out)
