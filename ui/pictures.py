"""Pictures the app draws on: their title goes above them as text, not as Gradio's label badge, which sits over
the picture's top-left corner, where the labels of boxes near the edge are drawn."""

from __future__ import annotations

import gradio as gr


def drawn_picture(title: str, **kwargs) -> gr.Image:
    """An output image titled `title` above it (the title stays its label for screen readers and scripts)."""
    gr.Markdown(f"**{title}**", elem_classes=["picture-title"])
    return gr.Image(label=title, show_label=False, interactive=False, **kwargs)
