"""Hand-made references for tests that need an answer known independently of tracklm's own code.

``helices``: a toy detector and exact helices through it (for the helix fit and the baselines).
``pixel_toy``: another toy detector and helices, as a dataset (for the task baselines).
``chains``: a dataset of module chains a tiny model learns quickly (for "pre-training learns").
Every other test uses the ``toy_data`` fixture of ``tests/conftest.py``: events made by tracklm's
own simulator and prepared by ``tracklm prepare``.
"""
