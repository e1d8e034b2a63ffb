"""Pictures of how SSD works, drawn only from the `ssd` public API (PIL / matplotlib in, images out)."""
