"""Training: the one loop for every recipe, augmentations, sample caching, DETL source stage."""
