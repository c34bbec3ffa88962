"""``SimulationConfig``: every number the built-in event generator uses, with its physics name.

Defaults are tuned so that a pile-up 200 event on the TrackML detector reproduces the figures of
real TrackML events (particle spectra, hit counts, hits per particle; see the tests in
``tests/simulate``). Units: mm, GeV, tesla, radiation lengths (X0). ``tracklm simulate`` fills
``mean_pileup_collisions`` from ``--pileup`` and records the whole config in its manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tracklm.errors import InputError
from tracklm.tracking.constants import TRACKML_FIELD_TESLA


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of the TrackML-like event generator.

    Collisions and primaries
    ------------------------
    signal_collisions : collisions present in every event on top of the pile-up (the hard scatter,
        modelled like a pile-up collision); with pile-up 0 an event still has particles.
    mean_pileup_collisions : mean number of pile-up collisions per event (``--pileup``). Fixed by
        default, as TrackML describes its events ("200 additional collisions"): a fractional
        part f adds one more collision to a fraction f of the events.
    pileup_poisson : draw the number of pile-up collisions from a Poisson distribution instead, as
        for one LHC bunch crossing. That alone spreads the hit count of pile-up 200 events by about
        7%, more than TrackML's events vary.
    charged_per_collision : mean number of charged primaries per collision within ``|eta| < eta_max``.
    multiplicity_shape : shape k of the negative-binomial multiplicity (smaller = wider). With a
        fixed number of collisions, k = 2 spreads the pixel hits of pile-up 200 events by about 5%.
    eta_max : primaries are flat in pseudorapidity over ``[-eta_max, eta_max]``.
    pt_median_gev, pt_log_sigma : log-normal transverse-momentum spectrum of primaries.
    pt_min_gev : no particle (primary or secondary) is generated below this pT.
    positive_fraction : probability that a particle is positively charged.
    kaon_fraction, proton_fraction : primary species mix (pions make up the rest).
    vertex_sigma_xy_mm, vertex_sigma_z_mm : Gaussian luminous region.

    Secondaries
    -----------
    secondary_fraction : fraction of all particles that are secondaries.
    secondary_pt_median_gev, secondary_pt_log_sigma : their log-normal pT spectrum.
    secondary_parent_eta_scale : parents are drawn with weight ``exp(-|eta| / scale)``. Forward
        parents interact too, in the disks and where they cross the beam pipe at a shallow angle:
        a third of TrackML's secondaries with hits are born at ``|z| > 550`` mm.
    secondary_opening_angle_rad : r.m.s. angle between a secondary and its parent. Interaction
        products come out wide: TrackML's secondaries with ``|eta| < 1`` are born at a median
        ``|z|`` of about 480 mm, mostly from forward parents.
    secondary_radius_levels, secondary_radius_quantiles_mm : the production-radius distribution of
        interaction secondaries (log-linear between these quantiles); each is placed at its parent's
        material crossing closest to the drawn radius.
    decay_fraction, decay_radius_scale_mm : secondaries from in-flight decays, placed on the parent's
        helix at ``1 mm + exponential(scale)`` from the beam line (inside the beam pipe).
    secondary_proton_fraction, secondary_electron_fraction : secondary species (pions the rest).

    Material and field
    ------------------
    magnetic_field_tesla : uniform field along +z.
    pixel_module_x0, strip_module_x0 : material of one module at normal incidence (X0 fraction).
    beam_pipe_radius_mm, beam_pipe_half_length_mm, beam_pipe_x0 : the beam pipe cylinder.
    energy_loss : subtract the mean ionisation loss at every crossing.
    mip_loss_gev_per_x0 : mean loss of a minimum-ionising particle per X0 of silicon.
    min_momentum_gev : a particle slowed below this momentum stops.
    interaction_rate_per_x0 : chance per X0 of material traversed that a particle ends in a
        nuclear interaction (or is otherwise lost): a layer crossing through x X0 (the path at
        its incidence angle) stops it with probability ``1 - exp(-rate * x)``. That is under 1%
        per pixel module at normal incidence, as TrackML's forward primaries show (about three
        quarters of those with ``|eta|`` 3.0-3.6 and hits keep hits on all seven disks), and ten
        times more at grazing incidence, as TrackML's primaries with ``|eta|`` 3.0-3.4 show
        (they graze the innermost barrel layer, and 8-10% of them leave no hit at all).
    pt_min_hits_gev : particles below this transverse momentum are listed but leave no hits
        (TrackML records no hits for them: 98% of its primaries under 150 MeV have none).
    max_layer_crossings : safety bound on the propagation steps per particle.

    Hits
    ----
    pixel_max_pitch_mm : modules with both pitches below this are pixels (fine 2D readout).
    hit_min_cos_incidence : a crossing at a grazing angle, with ``|cos|`` of the angle between
        the flight direction and the module normal below this, leaves no hit (its material still
        counts). TrackML records none there: its primaries with ``|eta| > 3``, which cross the
        innermost pixel barrel layer at ``|cos| = 1 / cosh(eta) < 0.1``, have no hit on it.
    hit_inefficiency : probability that a crossing leaves no hit.
    pixel_noise_fraction, strip_noise_fraction : fraction of the hits in pixel / strip modules that
        are noise; noise is spread uniformly over modules.
    lookup_margin_mm : margin of the module-candidate grid (covers stagger and tilt offsets).
    """

    signal_collisions: int = 1
    mean_pileup_collisions: float = 200.0
    pileup_poisson: bool = False
    charged_per_collision: float = 37.3
    multiplicity_shape: float = 2.0
    eta_max: float = 4.0
    pt_median_gev: float = 0.45
    pt_log_sigma: float = 0.75
    pt_min_gev: float = 0.1
    positive_fraction: float = 0.55
    kaon_fraction: float = 0.08
    proton_fraction: float = 0.14
    vertex_sigma_xy_mm: float = 0.04
    vertex_sigma_z_mm: float = 6.0

    secondary_fraction: float = 0.30
    secondary_pt_median_gev: float = 0.23
    secondary_pt_log_sigma: float = 0.59
    secondary_parent_eta_scale: float = 4.0
    secondary_opening_angle_rad: float = 1.0
    secondary_radius_levels: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    secondary_radius_quantiles_mm: tuple[float, ...] = (19.0, 35.0, 119.0, 274.0, 572.0, 1030.0)
    decay_fraction: float = 0.07
    decay_radius_scale_mm: float = 8.0
    secondary_proton_fraction: float = 0.35
    secondary_electron_fraction: float = 0.05

    magnetic_field_tesla: float = TRACKML_FIELD_TESLA
    pixel_module_x0: float = 0.015
    strip_module_x0: float = 0.025
    beam_pipe_radius_mm: float = 19.0
    beam_pipe_half_length_mm: float = 3000.0
    beam_pipe_x0: float = 0.0025
    energy_loss: bool = True
    mip_loss_gev_per_x0: float = 0.0363
    min_momentum_gev: float = 0.03
    max_layer_crossings: int = 64
    interaction_rate_per_x0: float = 0.5
    pt_min_hits_gev: float = 0.15

    pixel_max_pitch_mm: float = 0.2
    hit_min_cos_incidence: float = 0.1
    hit_inefficiency: float = 0.01
    pixel_noise_fraction: float = 0.055
    strip_noise_fraction: float = 0.25
    lookup_margin_mm: float = 8.0

    def __post_init__(self) -> None:
        pileup = self.mean_pileup_collisions
        if isinstance(pileup, bool) or not isinstance(pileup, (int, float)):
            raise InputError(
                f"simulation config: mean_pileup_collisions must be a number, got {pileup!r}"
            )
        if not math.isfinite(pileup) or pileup < 0:
            raise InputError(
                f"simulation config: mean_pileup_collisions must be a finite number >= 0, got {pileup!r}"
            )
