"""TrackML event files and prepared datasets."""
