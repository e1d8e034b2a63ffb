"""One detection's journey, in the paper's notation: the default box d it came from (layer, cell, shape, its box
at true scale), the four offsets l the network predicted for it, their decoding with the variances (eq. 2
backwards), its class scores after softmax, and what NMS did with the other candidates of its class.

The offsets are read back from the inference outputs: `ssd.encode` of the decoded box against d undoes the
graph's `ssd.decode` exactly, so decoding them here gives the detection's box again."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

import ssd

from .draw import draw_box, layer_colour, legend_strip, line_width_for, stack_vertical
from .nms import Candidate, pixels
from .numbers import box_text, counted, pixel_text, score_text


def journey(cfg: ssd.SSDConfig, raw: ssd.RawPrediction, prior: int, label: int, class_names,
            trace: list[Candidate]) -> dict:
    """Everything about the detection that default box `prior` gave for class `label` (1..C); `trace`: the NMS
    trace of that class (`visualize.nms.nms_trace`)."""
    layout = ssd.prior_layout(cfg)
    where = layout.describe(prior)
    d = layout.boxes[prior].float()
    box = raw.boxes[0, prior].float()
    v = cfg.variances
    offsets = ssd.encode(box[None], d[None], v)[0]
    cx, cy = d[0] + offsets[0] * v[0] * d[2], d[1] + offsets[1] * v[0] * d[3]
    w, h = d[2] * math.exp(float(offsets[2]) * v[1]), d[3] * math.exp(float(offsets[3]) * v[1])
    decoded = [float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2)]
    scores = raw.scores[0, prior].float()
    names = ["background", *class_names]
    mine = next((c for c in trace if c.prior == prior), None)
    return {
        "default_box": {**where, "cxcywh": [float(x) for x in d]},
        "variances": list(v),
        "offsets": [float(x) for x in offsets],
        "decoded_cxcywh": [float(cx), float(cy), float(w), float(h)],
        "decoded_xyxy": decoded,
        "box_xyxy": [float(x) for x in box],
        "decoding_error": max(abs(a - b) for a, b in zip(decoded, box.tolist())),
        "scores": sorted(({"class": names[i], "p": float(scores[i])} for i in range(len(names))),
                         key=lambda s: -s["p"]),
        "class": names[label],
        "nms": None if mine is None else {
            "rank": mine.rank, "kept": mine.kept, "suppressed_by": mine.by, "iou_with_it": mine.iou,
            "suppressed": [{"rank": c.rank, "prior": c.prior, "score": c.score, "iou": c.iou, "box": c.box}
                           for c in trace if c.by == mine.rank]},
    }


def journey_markdown(j: dict, width: int, height: int) -> str:
    d, off, v = j["default_box"], j["offsets"], j["variances"]
    dcx, dcy, dw, dh = d["cxcywh"]
    cx, cy, w, h = j["decoded_cxcywh"]
    head = [
        f"**Default box d = #{d['index']}**: {d['layer']} ({d['feature_map']}×{d['feature_map']}), cell "
        f"({d['row']}, {d['col']}), shape {d['shape']}; d = (cx {dcx:.4f}, cy {dcy:.4f}, w {dw:.4f}, h {dh:.4f}) "
        f"of the image, {pixel_text(dw * width)}×{pixel_text(dh * height)} px here.",
        f"**Predicted offsets l** = ({off[0]:+.3f}, {off[1]:+.3f}, {off[2]:+.3f}, {off[3]:+.3f}); variances "
        f"({v[0]:g}, {v[1]:g}).",
        "**Decoding** (eq. 2 backwards):",
    ]
    steps = [
        f"- cx = d_cx + l_cx·{v[0]:g}·d_w = {dcx:.4f} + {off[0]:+.3f}·{v[0]:g}·{dw:.4f} = **{cx:.4f}**",
        f"- cy = d_cy + l_cy·{v[0]:g}·d_h = {dcy:.4f} + {off[1]:+.3f}·{v[0]:g}·{dh:.4f} = **{cy:.4f}**",
        f"- w = d_w·exp(l_w·{v[1]:g}) = {dw:.4f}·exp({off[2] * v[1]:+.3f}) = **{w:.4f}**",
        f"- h = d_h·exp(l_h·{v[1]:g}) = {dh:.4f}·exp({off[3] * v[1]:+.3f}) = **{h:.4f}**",
        f"- box = ({box_text(pixels(j['box_xyxy'], width, height))}) px, clipped to the image: the detection's box "
        f"(this decoding agrees with the graph's to {j['decoding_error']:.0e})",
    ]
    lines = [
        "**Class scores** (softmax over the classes and background): "
        + ", ".join(f"{s['class']} {score_text(s['p'])}" for s in j["scores"][:5]) + ".",
    ]
    nms = j["nms"]
    if nms is not None:
        if nms["kept"]:
            gone = nms["suppressed"]
            listed = ": " + ", ".join(f"#{c['rank']} (IoU {c['iou']:.2f})" for c in gone[:8]) if gone else ""
            lines.append(f"**NMS**: rank {nms['rank']} of its class; kept, and it suppressed "
                         f"{counted(len(gone), 'candidate')}{listed}.")
        else:
            lines.append(f"**NMS**: rank {nms['rank']}; suppressed by #{nms['suppressed_by']} "
                         f"(IoU {nms['iou_with_it']:.2f}).")
    return "\n\n".join(head) + "\n" + "\n".join(steps) + "\n\n" + "\n\n".join(lines)


def draw_journey(image: Image.Image, j: dict) -> Image.Image:
    """The detection (its class colour, solid), its default box at true scale (its layer's colour, dashed) and
    the candidates it suppressed (thin grey)."""
    out = image.convert("RGB").copy()
    W, H = out.size
    draw = ImageDraw.Draw(out)
    lw = line_width_for(out)
    scale = (W, H, W, H)
    d = j["default_box"]
    cx, cy, w, h = d["cxcywh"]
    for c in (j["nms"] or {}).get("suppressed", []):
        draw_box(draw, [a * s for a, s in zip(c["box"], scale)], (170, 170, 170), max(1, lw // 2))
    draw_box(draw, [(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H],
             layer_colour(d["layer_index"]), lw + 1, dashed=True)
    draw_box(draw, [a * s for a, s in zip(j["box_xyxy"], scale)], (255, 230, 0), lw + 1)
    items = [(f"default box #{d['index']} ({d['layer']})", layer_colour(d["layer_index"])),
             (f"the detection: {j['class']}", (255, 230, 0)), ("candidates it suppressed", (170, 170, 170))]
    return stack_vertical(out, legend_strip(items, W))


def class_bars(j: dict, top: int = 6) -> list[list]:
    """The best class scores as rows: class, probability, a bar."""
    return [[s["class"], score_text(s["p"]), "█" * max(1, round(s["p"] * 30)) if s["p"] >= 0.005 else ""]
            for s in j["scores"][:top]]

