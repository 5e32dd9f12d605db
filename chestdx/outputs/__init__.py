"""Output writers: files a study's results are delivered as (NIfTI label maps, overlays, JSON)."""
