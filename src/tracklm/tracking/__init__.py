"""Track physics shared by evaluation, tasks, the simulator and (next) track finding.

``constants``
    The GeV per (tesla metre) factor and the TrackML field, defined once.
``helix``
    Helix fits to batches of tracks (``fit_helix`` -> ``HelixFit``: pT, charge, arc lengths,
    crossings with cylinders and z planes), vectorized over tracks.

Detector layers and module frames that helices are crossed with live in ``tracklm.detector``
(``layers.TokenLayers``, ``frames.ModuleFrames``).
"""
