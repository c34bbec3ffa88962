"""Physical constants of charged-particle tracking, defined once.

Units: GeV, tesla, metres (and mm where a name says so).
"""

from __future__ import annotations

# pT [GeV] = 0.299792458 * |q| [e] * B [T] * R [m]: the speed of light in units of 1e9 m/s.
GEV_PER_TESLA_METRE = 0.299792458
# The TrackML detector's solenoid field, along +z. Datasets record the field they were made with
# (``PreparedDataset.b_field_t``); this value stands in for data that predates the record, for
# real TrackML events, and for the simulator's default.
TRACKML_FIELD_TESLA = 2.0
