"""``tracklm score``: the TrackML score of a track finder's output, and the figures around it."""
