"""``make bench``: speed and memory measured as ratios against a baseline taken in the same run."""
