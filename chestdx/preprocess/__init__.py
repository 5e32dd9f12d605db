"""Preprocessing: HU windows, lung segmentation, slice filters and selection, resizing, contact sheets."""
