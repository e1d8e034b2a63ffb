"""What one tab of the page reads from another, handed over by app.py: the tabs themselves never import each
other."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr


@dataclass
class Controls:
    """The Detect tab's widgets other tabs read (Matching's "use current detections")."""

    score: gr.Slider
    nms: gr.Slider


@dataclass
class PhotoInputs:
    """The Matching tab's photo (its state) and ground-truth table, which the Augmentation tab can take."""

    state: gr.State
    table: gr.Dataframe
