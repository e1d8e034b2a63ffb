"""The Default boxes tab: the 4 or 6 default boxes of any cell of any source feature map, at true scale, for
SSD300 or SSD512, on an example photo or one's own. It needs no network; with a model, its layout is offered under
the model's own config, whose source layers name the feature maps as the other tabs do."""

from __future__ import annotations

from functools import partial

import gradio as gr
from PIL import Image

import ssd
from visualize.examples import example_image, example_names
from visualize.numbers import pixel_text
from visualize.priors import (
    CANVAS_SIZE,
    cell_at,
    cell_default_boxes,
    draw_cell_default_boxes,
    feature_map_choices,
    layer_label,
    layer_summary,
    shape_choices,
    summary_formula,
)

from .default_box_choices import CONFIG_LABEL, CONFIGS, config_choices, own_label
from .pictures import drawn_picture
from .visitor_input import Refused, from_jpeg, read_upload, served, short, to_jpeg

SHAPE_CHOICES = shape_choices(ssd.SSD512_VOC)  # both configs have every shape
INTRO = ("Every cell of every source feature map carries 4 or 6 *default boxes*, centred on the cell: ratio 1 at "
         "scale sₖ, an extra ratio-1 box at s′ₖ = √(sₖ·sₖ₊₁), and ratios 2, ½ (and 3, ⅓). Click the picture to "
         "pick a cell.")


def photo_of(photo, upload) -> Image.Image:
    """The example `photo`, else the uploaded one (JPEG bytes from `load_upload`), else the astronaut."""
    if photo is None and upload is not None:
        return from_jpeg(upload)
    return example_image(photo or "astronaut")


def load_upload(value):
    """An upload -> (the photo warped to the canvas, as JPEG bytes: a small session state, read again by every
    redraw; the example dropdown let go of its photo)."""
    if value is None:
        return gr.skip(), gr.skip()
    image = read_upload(value).resize((CANVAS_SIZE, CANVAS_SIZE), Image.BILINEAR)
    return to_jpeg(image), gr.Dropdown(value=None)


def layout(configs, config_name) -> ssd.SSDConfig:
    if not isinstance(config_name, str) or config_name not in configs:
        raise Refused(f"{CONFIG_LABEL}: {short(repr(config_name))} is none of {', '.join(configs)}.")
    return configs[config_name]


def index_in(value, n: int, what: str) -> int:
    """`value` as an index into n things, clamped (the controls may lag a switch to a smaller map), or Refused
    for what is no whole number (API callers can send anything)."""
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        raise Refused(f"{what} must be a whole number, got {short(repr(value))}.") from None
    return min(max(v, 0), n - 1)


def priors_view(config_name, layer, row, col, shapes, grid, photo, upload=None, configs=CONFIGS):
    """The picture, the cell's boxes, the per-layer summary and the caption. The events pass the controls' values
    unchecked (`preprocess=False`): after a switch to a smaller feature map the row and column may still be those
    of the larger one for a moment, and are clamped here, where Gradio's own check would refuse them."""
    cfg = layout(configs, config_name)
    layer = index_in(layer, len(cfg.feature_maps), "layer")  # the layer list may lag a switch from SSD512 to SSD300
    f = cfg.feature_maps[layer]
    row, col = index_in(row, f, "row"), index_in(col, f, "col")
    image = photo_of(photo, upload)
    picture = draw_cell_default_boxes(image, cfg, layer, row, col, shapes, show_grid=grid)
    boxes = cell_default_boxes(cfg, layer, row, col)
    rows = [[b["shape"], *(pixel_text(v) for v in (b["w_px"], b["h_px"], b["cx"] * cfg.image_size,
                                                   b["cy"] * cfg.image_size)), b["index"]] for b in boxes]
    headers, summary = layer_summary(cfg)
    caption = (f"**{cfg.name.split('_')[0]}**: {summary_formula(cfg)} default boxes. "
               f"Cell ({row}, {col}) of {layer_label(cfg, layer)} holds boxes #{boxes[0]['index']}–"
               f"#{boxes[-1]['index']}. The photo is warped to the {cfg.image_size}×{cfg.image_size} input, as SSD "
               "sees it; box sizes are in input pixels.")
    return served(picture), rows, summary, caption


def on_cell(config_name, layer, value, configs=CONFIGS):
    """A row or column typed (or dragged): the number the picture uses for it, where that is another (99 typed
    for a 24×24 map is drawn as 23, and the slider then says 23)."""
    cfg = layout(configs, config_name)
    f = cfg.feature_maps[index_in(layer, len(cfg.feature_maps), "layer")]
    used = index_in(value, f, "cell")
    return gr.skip() if value == used else used


def cell_slider(f: int) -> gr.Slider:
    """A row/column slider for an f×f map. A 1×1 map has one cell, and a Gradio slider needs min < max, so
    its slider spans 0–1, stays at 0 and is locked."""
    if f == 1:
        return gr.Slider(minimum=0, maximum=1, value=0, interactive=False)
    return gr.Slider(minimum=0, maximum=f - 1, value=f // 2, interactive=True)


def on_config(config_name, layer, configs=CONFIGS):
    cfg = layout(configs, config_name)
    layer = index_in(layer, len(cfg.feature_maps), "layer")
    choices = [(label, k) for k, label in enumerate(feature_map_choices(cfg))]
    f = cfg.feature_maps[layer]
    return gr.Dropdown(choices=choices, value=layer), cell_slider(f), cell_slider(f)


def on_layer(config_name, layer, configs=CONFIGS):
    cfg = layout(configs, config_name)
    f = cfg.feature_maps[index_in(layer, len(cfg.feature_maps), "layer")]
    return cell_slider(f), cell_slider(f)


def on_priors_click(config_name, layer, evt: gr.SelectData, configs=CONFIGS):
    x, y = evt.index[0], evt.index[1]
    if y >= CANVAS_SIZE:  # the legend below the picture is not part of the grid
        return gr.skip(), gr.skip()
    cfg = layout(configs, config_name)
    row, col = cell_at(cfg, index_in(layer, len(cfg.feature_maps), "layer"), x, y, CANVAS_SIZE, CANVAS_SIZE)
    return row, col


def build(model_config: ssd.SSDConfig | None = None):
    """The tab's widgets and events (inside a gr.Blocks); `model_config`: the served model's config, if any.
    Returns (inputs, outputs) of the first drawing, for the page's load event."""
    configs = config_choices(model_config)
    first = own_label(configs, model_config) if model_config in configs.values() else "SSD300"
    bound = {name: partial(fn, configs=configs) for name, fn in
             (("view", priors_view), ("config", on_config), ("layer", on_layer), ("cell", on_cell))}

    def click(config_name, layer, evt: gr.SelectData):  # Gradio finds the event data by this annotation
        return on_priors_click(config_name, layer, evt, configs)

    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            config = gr.Radio(list(configs), value=first, label=CONFIG_LABEL, elem_id="priors-config")
            layer = gr.Dropdown([(c, k) for k, c in enumerate(feature_map_choices(configs[first]))], value=1,
                                label="Feature map", elem_id="priors-layer")
            f = configs[first].feature_maps[1]
            row = gr.Slider(0, f - 1, value=min(7, f - 1), step=1, label="Cell row i")
            col = gr.Slider(0, f - 1, value=min(9, f - 1), step=1, label="Cell column j")
            shapes = gr.CheckboxGroup(SHAPE_CHOICES, value=[v for _, v in SHAPE_CHOICES], label="Aspect ratios")
            grid = gr.Checkbox(value=True, label="Show the grid of cell centres")
            photo = gr.Dropdown(example_names(), value="astronaut", label="Photo")
            upload = gr.Image(type="filepath", image_mode=None, label="…or your own photo",
                              sources=["upload", "clipboard"], height=140, elem_id="priors-upload")
            uploaded = gr.State(None)
            cell = gr.Dataframe(headers=["shape", "w (px)", "h (px)", "cx (px)", "cy (px)", "#"], interactive=False,
                                label="This cell's default boxes")
        with gr.Column(scale=3):
            image = drawn_picture("Default boxes of one cell (click to choose a cell)",
                             elem_id="priors-output", format="jpeg")
            caption = gr.Markdown(elem_id="priors-caption")
    summary = gr.Dataframe(headers=layer_summary(configs[first])[0], interactive=False,
                           label="Default boxes per source layer", elem_id="priors-summary")
    inputs = [config, layer, row, col, shapes, grid, photo, uploaded]
    outputs = [image, cell, summary, caption]
    # Every handler clamps the layer, row and column itself (priors_view), so none lets Gradio check them first.
    raw = dict(api_visibility="private", preprocess=False)
    config.input(bound["config"], [config, layer], [layer, row, col], **raw)
    layer.input(bound["layer"], [config, layer], [row, col], **raw)
    for slider in (row, col):  # only what a visitor sets: a layer switch sets both itself (on_layer)
        slider.input(bound["cell"], [config, layer, slider], [slider], **raw)
    for control in inputs[:-1]:
        control.change(bound["view"], inputs, outputs, show_progress="hidden", trigger_mode="always_last",
                       concurrency_limit=4, concurrency_id="pictures", **raw)
    upload.upload(load_upload, [upload], [uploaded, photo], **raw).then(
        bound["view"], inputs, outputs, concurrency_limit=4, concurrency_id="pictures", **raw)
    photo.input(lambda: gr.Image(value=None), None, [upload], api_visibility="private")
    upload.clear(lambda: (None, "astronaut"), None, [uploaded, photo], api_visibility="private")
    image.select(click, [config, layer], [row, col], **raw)
    return bound["view"], inputs, outputs
