"""The TrackML module-table layout (``detectors.csv``): column names and module keys.

A leaf module: ``geometry`` (the ``Detector``), ``builtin`` (the generated detector) and ``vocab``
all read the layout from here, so none of them imports another to learn it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ID_COLUMNS = ("volume_id", "layer_id", "module_id")
ROTATION_COLUMNS = tuple(f"rot_{g}{a}" for g in "xyz" for a in "uvw")
TRACKML_COLUMNS = (
    *ID_COLUMNS,
    "cx",
    "cy",
    "cz",
    *ROTATION_COLUMNS,
    "module_t",
    "module_minhu",
    "module_maxhu",
    "module_hv",
    "pitch_u",
    "pitch_v",
)
# The Codalab release names the pitch columns differently; both layouts are read.
PITCH_ALIASES = {"pitchX": "pitch_u", "pitchY": "pitch_v"}
PIXEL_VOLUMES = (7, 8, 9)


def module_keys(
    volume_id: npt.ArrayLike, layer_id: npt.ArrayLike, module_id: npt.ArrayLike
) -> np.ndarray:
    """Pack (volume, layer, module) into one sortable int64 key per module."""
    volume = np.asarray(volume_id, dtype=np.int64)
    layer = np.asarray(layer_id, dtype=np.int64)
    module = np.asarray(module_id, dtype=np.int64)
    return (volume << 40) | (layer << 24) | module
