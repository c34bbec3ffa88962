"""Track generation: complete tracks from seed hits and sample new ones, judged against the
simulator (``tracklm generate``).

* ``decode``: step-by-step decoding (greedy, beam, sampling) from a ``next-module`` model (with
  a key/value cache) or a ``masked`` model (a trailing ``[MASK]`` filled repeatedly).
* ``follower``: the physics baseline, a helix follower from the same seeds.
* ``judge``: physics observables of generated tracks and their distances to a simulated sample.
* ``run``: the command.
"""
