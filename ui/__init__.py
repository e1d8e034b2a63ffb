"""The demo page's parts (Gradio), one module per concern: settings, inputs, the model, and one module per
tab. `app.py` puts them together. Model maths lives in `ssd/`, pictures in `visualize/`; these modules only
check inputs, keep session state and wire widgets to those two."""
