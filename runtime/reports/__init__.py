"""Showing maps: heatmap overlays, explanation figures, HTML reports, charts."""
