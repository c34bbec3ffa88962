"""``FinderConfig``: every cut and window of the track finders, with its physics name.

One set of defaults, shared by ``--method helix`` and ``--method model`` (the model only adds its
own weights, ``model_*``). Units: mm, GeV, radians; chi2 values are sums of squared pulls.
Tuned on simulated pile-up 200 events (``tracklm simulate --seed 11``); nothing depends on the
exact hit counts of an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRIPLE_KINDS = ("first", "skipped", "consecutive", "overlap")
"""The kinds of layer triple a round seeds on (``SeedRound.triples``)."""


@dataclass(frozen=True)
class SeedRound:
    """One round of seeding, extension and resolution, on the hits earlier rounds left free.

    Attributes
    ----------
    triples : ``"first"`` (the first three layers a particle crosses), ``"skipped"`` (one of
        the first four skipped: a missing hit), ``"consecutive"`` (any three in a row) or
        ``"overlap"`` (two layers in a row, two hits on the second).
    pt_min_gev : lowest seed pT of the round.
    min_hits : shortest track the round accepts. Strict early rounds take the clear tracks out,
        so later, looser rounds see fewer hits and make fewer fakes.
    beamline : seeds come from the beam line (``find_seeds``); False for particles made inside
        the detector (``find_free_seeds``).
    """

    triples: str = "first"
    pt_min_gev: float = 0.2
    min_hits: int = 4
    beamline: bool = True


DEFAULT_ROUNDS = (
    SeedRound("first", 0.5, 5),
    SeedRound("skipped", 0.5, 5),
    SeedRound("first", 0.2, 4),
    SeedRound("skipped", 0.2, 4),
    SeedRound("first", 0.12, 3),
    SeedRound("skipped", 0.12, 4),
    SeedRound("consecutive", 0.2, 4, beamline=False),
    SeedRound("overlap", 0.15, 4),
    # slow particles made inside the detector, below the free round's 0.2 GeV (chosen on the
    # seed-12 tuning events, README "The last round")
    SeedRound("consecutive", 0.12, 4, beamline=False),
)


@dataclass(frozen=True)
class FinderConfig:
    """Cuts and windows of the seeded helix follower.

    Seeding (triplets on consecutive layers, primaries from the beam line)
    ---------------------------------------------------------------------
    seed_z0_max_mm : how far from z = 0 along the beam a seed's line may start.
    (the third hit must lie within ``chi2_max`` of the crossing that the circle through the
    beam line and the first two hits predicts, with the extension's uncertainties)
    luminous_fraction, luminous_margin_mm, luminous_min_tracks : after the first round, seeds
        start only where that round's tracks did (the central fraction of their z0, widened by
        the margin), when at least that many tracks were found (``finder.luminous_region``).
    free_seed_d0_max_mm : largest distance of closest approach to the beam line of a seed made
        without the beam-line constraint (secondaries).
    free_seed_z0_max_mm : the z0 window of those seeds.
    seed_layer_support : a layer triple seeds only if at least this fraction of the sampled
        trajectories that cross three layers start on it (drops geometric curiosities).

    Extension (helix through the last three layers, nearest hit on the next crossed layer)
    -------------------------------------------------------------------------------------
    hit_sigma_mm : floor of the prediction's uncertainty (hit resolution, fit error).
    ms_mm_gev_per_100mm : multiple-scattering spread of the prediction per GeV^-1 of momentum
        and per 100 mm of flight (Highland formula for about 1.5% X0 per pixel layer).
    chi2_max : largest chi2 (two pulls) for a hit to join a track.
    overlap_chi2_max : the same for a second hit of a layer (the overlapping neighbour module).
    search_sigmas : half-width of the hit search window in units of the prediction's sigma (at
        least sqrt of the largest chi2 used, ``model_window_chi2`` included).
    max_hits_per_layer : hits one track may take on one layer (each on its own module; the
        simulator's overlapping disk modules give up to four).
    max_missed_layers : a track ends after more than this many crossed layers without a hit in a
        row.
    max_hits : hits a track may hold (pixel tracks rarely pass 20).

    Ambiguity resolution and output
    -------------------------------
    chi2_weight : quality = hits - chi2_weight * chi2 / hits; greedy in decreasing quality.
    max_shared_fraction : a candidate whose hits are more than this fraction already taken is
        dropped; otherwise it keeps its free hits.
    rounds : the seeding rounds (``SeedRound``), in order.

    Model-guided method (``--method model``; ``tracklm.find.model``)
    ---------------------------------------------------------------
    model_window_chi2 : the helix proposes the next layer's hits up to this chi2 (wider than
        ``chi2_max``); the model ranks them.
    model_step_weight : a proposal's score is chi2 - 2 * weight * log p(its module | track).
    model_ask_chi2_gap : the model is asked only where the runner-up (on another module) is
        within this chi2 of the best proposal, or the best lies outside ``chi2_max``.
    model_min_context : the model is asked only for tracks of at least this many hits.
    model_rescue_top_k : a proposal beyond ``chi2_max`` joins only if its module is among the
        model's this many first choices.
    model_pll_weight : weight of the candidate's pseudo-log-likelihood (mean log p per hit) in
        the resolution's quality.
    model_max_scored_hits : longer candidates keep the helix quality alone.
    model_veto_pll : a scored candidate whose pseudo-log-likelihood is below this is dropped.
    model_short_hits, model_short_veto_quantile : a candidate of at most ``model_short_hits``
        hits is also dropped when its pseudo-log-likelihood is below this quantile of the
        model's own values for real tracks of that length in the event: the innermost
        ``model_short_hits`` hits of the first round's candidates with at least two hits more
        (nearly all real). Most fakes are that short; the threshold follows each model's scale
        (a hit-aware model is surer of a real track than a tokens model). 0 (the default)
        switches it off: it trades score for fewer fakes (``tracklm find --short-veto``).
    model_reference_min_tracks, model_reference_max_tracks : fewer reference tracks than the
        minimum leave only ``model_veto_pll``; beyond the maximum, an even sample of them.
    model_scorer_weight : with a model fine-tuned on candidates (``tracklm finetune --task
        candidates``), the weight of its track logit added to the helix quality.
    model_scorer_bad_weight : the weight of the hits such a model expects not to be the
        candidate's particle's (subtracted from the quality).
    model_scorer_veto : such a model drops a candidate whose track logit is below this.
    model_scorer_batch : candidates per forward pass of such a model.
    """

    rounds: tuple[SeedRound, ...] = field(default=DEFAULT_ROUNDS)
    seed_z0_max_mm: float = 200.0
    seed_layer_support: float = 0.005
    luminous_fraction: float = 0.99
    luminous_margin_mm: float = 10.0
    luminous_min_tracks: int = 100
    free_seed_d0_max_mm: float = 40.0
    free_seed_z0_max_mm: float = 500.0

    hit_sigma_mm: float = 0.1
    ms_mm_gev_per_100mm: float = 0.25
    chi2_max: float = 12.0
    overlap_chi2_max: float = 6.0
    search_sigmas: float = 5.0
    max_hits_per_layer: int = 4
    max_missed_layers: int = 1
    max_hits: int = 32

    chi2_weight: float = 1.0
    max_shared_fraction: float = 0.5

    model_window_chi2: float = 25.0
    model_step_weight: float = 1.0
    model_ask_chi2_gap: float = 8.0
    model_min_context: int = 3
    model_rescue_top_k: int = 3
    model_pll_weight: float = 1.0
    model_max_scored_hits: int = 5
    model_veto_pll: float = -3.0
    model_short_hits: int = 4
    model_short_veto_quantile: float = 0.0
    model_reference_min_tracks: int = 50
    model_reference_max_tracks: int = 2000
    model_scorer_weight: float = 0.5
    model_scorer_bad_weight: float = 1.0
    model_scorer_veto: float = 0.0
    model_scorer_batch: int = 4096
