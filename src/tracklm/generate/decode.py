"""Completing tracks step by step: greedy, beam search or sampling, from either objective.

A track grows one module at a time until the model ends it (or it reaches ``max_hits``):

* a ``next-module`` model scores the next token at the last position (``models/decoding.py``,
  with a key/value cache), ``[SEP]`` ending the track;
* a ``masked`` model scores a trailing ``[MASK]`` (``[CLS] h_0 ... h_n [MASK] [SEP]``, the whole
  sequence encoded again at each step). It was never taught to end a track, so it ends one with a
  fixed score: the end gets probability ``stop_score`` against the modules' 1, i.e.
  p(end) = s / (1 + s) and p(m) = p_model(m) / (1 + s); greedy decoding ends a track when no
  module is more probable than ``stop_score``.

Only module tokens and the end are ever chosen, and (``no_repeat``) never a module the track
already holds. A model that reads hits (``inputs: hits``) reads the seeds' measured positions,
and for each module it chooses, the position its position head predicts there.

Shape legend: ``N`` tracks, ``S`` seed width, ``L`` ``max_hits``, ``b`` rows in a batch (tracks,
or tracks x beams), ``v`` vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.models.bert import TrackingBert
from tracklm.models.decoding import CausalDecoder, KVCache

STRATEGIES = ("greedy", "beam", "sample")


@dataclass(frozen=True)
class DecodeOptions:
    """How tracks are completed.

    Attributes
    ----------
    strategy : ``greedy`` (the most probable token each step), ``beam`` (the most probable
        tracks found by a beam search of ``beam_width``) or ``sample`` (draws, with
        ``temperature`` and ``top_k``).
    beam_width : beams per track.
    temperature : divides the logits before sampling (1: the model's distribution).
    top_k : sample among the k most probable tokens only (0: all).
    max_hits : L, the longest track; a track of L hits ends there.
    stop_score : a masked model's fixed score for ending the track (see the module docstring).
    no_repeat : never choose a module the track already holds.
    seed : seed of the sampling generator.
    batch_size : tracks per batch.
    score : report each track's log-probability (``Generated.log_prob``; a beam search always
        computes it). Normalising a causal model's scores over the whole vocabulary costs about
        as much as choosing the token, so greedy and sampled tracks skip it by default.
    """

    strategy: str = "greedy"
    beam_width: int = 4
    temperature: float = 1.0
    top_k: int = 0
    max_hits: int = 8
    stop_score: float = 0.3
    no_repeat: bool = True
    seed: int = 0
    batch_size: int = 2048
    score: bool = False

    @property
    def scored(self) -> bool:
        """Whether each track's log-probability is computed (asked, or a beam search)."""
        return self.score or self.strategy == "beam"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"--strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        checks = [
            (self.beam_width >= 1, f"--beam-width must be at least 1, got {self.beam_width}"),
            (self.temperature > 0, f"--temperature must be positive, got {self.temperature}"),
            (self.top_k >= 0, f"--top-k must be at least 0, got {self.top_k}"),
            (self.max_hits >= 1, f"max_hits must be at least 1, got {self.max_hits}"),
            (self.stop_score > 0, f"--stop-score must be positive, got {self.stop_score}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


@dataclass
class Generated:
    """Completed tracks.

    Attributes
    ----------
    tokens : (N, L) int64 the seeds then the generated modules, ``[PAD]`` (0) after the last.
    lengths : (N,) int64 hits per track (seeds included).
    positions_mm : (N, L, 3) float32 the seeds' positions, then the predicted position of each
        generated hit (NaN after the end); None for a model that predicts no positions.
    log_prob : (N,) the model's log-probability of the generated part (the end included); NaN
        unless ``DecodeOptions.score`` or a beam search.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    positions_mm: np.ndarray | None
    log_prob: np.ndarray


class _Stepper:
    """The model behind the search: scores of the next token for b rows, then one more token."""

    def __init__(self, model: TrackingBert, vocab: ModuleVocab, options: DecodeOptions) -> None:
        self.model = model
        self.vocab = vocab
        self.causal = model.config.causal
        self.reads_hits = model.config.reads_hits
        self.decoder = CausalDecoder(model, options.max_hits + 1) if self.causal else None
        self.device = next(model.parameters()).device
        stop_score = options.stop_score
        self.log_stop = math.log(stop_score)
        self.log_norm = math.log1p(stop_score)
        self.cache = KVCache()
        self.hidden: Tensor | None = None  # (b, d) at the last position (causal)
        self.rows: Tensor | None = None  # (b, d) at the trailing [MASK] (masked)

    def start(self, tokens: Tensor, hits: Tensor | None) -> None:
        """Prefix ``[CLS] tokens`` (b, n) with hits (b, n, 3)."""
        if self.decoder is None:
            return
        self.cache = KVCache()
        b = tokens.shape[0]
        cls = torch.full((b, 1), self.vocab.cls_id, dtype=torch.long, device=self.device)
        prefix_hits = None
        if hits is not None:
            none = torch.full((b, 1, 3), float("nan"), device=self.device)
            prefix_hits = torch.cat([none, hits], dim=1)
        # the whole prefix in one pass
        self.hidden = self.decoder.step(torch.cat([cls, tokens], dim=1), self.cache, prefix_hits)

    def log_probs(self, tokens: Tensor, hits: Tensor | None) -> Tensor:
        """(b, v) log-probabilities of the next token, after the rows' ``tokens`` (b, n), up to
        a constant per row (a causal model's logits: normalised only where needed)."""
        if self.decoder is not None:
            assert self.hidden is not None
            return self.decoder.logits(self.hidden).float()
        b, n = tokens.shape
        v = self.vocab
        ids = torch.cat(
            [
                torch.full((b, 1), v.cls_id, dtype=torch.long, device=self.device),
                tokens,
                torch.full((b, 1), v.mask_id, dtype=torch.long, device=self.device),
                torch.full((b, 1), v.sep_id, dtype=torch.long, device=self.device),
            ],
            dim=1,
        )
        grid = None
        if self.reads_hits:
            grid = torch.full((b, n + 3, 3), float("nan"), device=self.device)
            if hits is not None:
                grid[:, 1 : n + 1] = hits
        at = torch.stack([torch.arange(b), torch.full((b,), n + 1)], dim=1).to(self.device)
        with torch.no_grad():
            heads = self.model.masked_heads(ids, None, None, at, grid)
        self.rows = heads.rows
        out = torch.log_softmax(heads.mlm_logits.float(), dim=-1) - self.log_norm
        out[:, v.sep_id] = self.log_stop - self.log_norm
        return out

    def locate(self, modules: Tensor) -> Tensor | None:
        """(b, 3) predicted positions of the chosen next modules (``inputs: hits``), else None."""
        if not self.reads_hits:
            return None
        rows = self.hidden if self.causal else self.rows
        assert rows is not None
        safe = modules.clamp(min=self.vocab.num_special)
        with torch.no_grad():
            return self.model.locate(rows, safe).float()

    def reorder(self, parents: Tensor) -> None:
        """Keep rows ``parents`` (m,), in that order (beams reordered, finished tracks dropped)."""
        if self.decoder is not None:
            self.cache = self.cache.select(parents)
            assert self.hidden is not None
            self.hidden = self.hidden.index_select(0, parents)
        elif self.rows is not None:
            self.rows = self.rows.index_select(0, parents)

    def advance(self, chosen: Tensor, where: Tensor | None) -> None:
        """Append ``chosen`` (b,) tokens with positions ``where`` (b, 3) or None."""
        if self.decoder is not None:
            self.hidden = self.decoder.step(chosen, self.cache, where)


def _allowed(
    log_probs: Tensor, tokens: Tensor, n: int, vocab: ModuleVocab, options: DecodeOptions
) -> Tensor:
    """Forbid special tokens but the end, repeated modules, and anything but the end at L hits
    (in place)."""
    out = log_probs
    special = torch.arange(vocab.num_special, device=out.device)
    out[:, special[special != vocab.sep_id]] = -math.inf
    if options.no_repeat and n > 0:
        out.scatter_(1, tokens, -math.inf)
    if n >= options.max_hits:
        keep = out[:, vocab.sep_id].clone()
        out.fill_(-math.inf)
        out[:, vocab.sep_id] = keep
    return out


def complete(
    model: TrackingBert,
    vocab: ModuleVocab,
    tokens: np.ndarray,
    lengths: np.ndarray,
    hits: np.ndarray | None,
    options: DecodeOptions,
    progress: Callable[[int], None] | None = None,
) -> Generated:
    """Complete tracks from their seeds (see the module docstring).

    Parameters
    ----------
    model : a ``masked`` or ``next-module`` model (eval mode).
    vocab : its vocabulary.
    tokens : (N, S) seed token ids; row i's seeds are its first ``lengths[i]`` (0: none, an
        unconditional track).
    lengths : (N,) seeds per track.
    hits : (N, S, 3) the seeds' measured positions in mm (read by an ``inputs: hits`` model, which
        needs them), or None.
    options : the strategy.
    progress : called with the number of tracks done after each batch.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n_tracks, big_l = tokens.shape[0], options.max_hits
    if model.config.reads_hits and hits is None:
        raise InputError("this model reads hit positions (inputs: hits): the seeds need them")
    if lengths.size and int(lengths.max()) > big_l:
        raise InputError(f"seeds of {int(lengths.max())} hits exceed max_hits {big_l}")
    out_tokens = np.full((n_tracks, big_l), vocab.pad_id, dtype=np.int64)
    out_lengths = np.zeros(n_tracks, dtype=np.int64)
    out_hits = np.full((n_tracks, big_l, 3), np.nan, dtype=np.float32)
    out_logp = np.zeros(n_tracks, dtype=np.float64)
    generator = torch.Generator(next(model.parameters()).device).manual_seed(options.seed)
    done = 0
    for seeds in np.unique(lengths):
        index = np.flatnonzero(lengths == seeds)
        for first in range(0, index.size, options.batch_size):
            rows = index[first : first + options.batch_size]
            seed_tokens = torch.as_tensor(tokens[rows, :seeds])
            seed_hits = None
            if hits is not None:
                seed_hits = torch.as_tensor(np.asarray(hits[rows, :seeds], dtype=np.float32))
            result = _search(model, vocab, seed_tokens, seed_hits, options, generator)
            out_tokens[rows], out_lengths[rows], out_logp[rows] = result[0], result[1], result[3]
            if result[2] is not None:
                out_hits[rows] = result[2]
            done += rows.size
            if progress is not None:
                progress(done)
    positions = out_hits if model.config.reads_hits else None
    if not options.scored:
        out_logp[:] = np.nan
    return Generated(out_tokens, out_lengths, positions, out_logp)


def _search(
    model: TrackingBert,
    vocab: ModuleVocab,
    seeds: Tensor,
    seed_hits: Tensor | None,
    options: DecodeOptions,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """One batch of tracks with the same number of seeds: greedy, sampling or beam search.

    Greedy and sampled tracks leave the batch as they end, so each step costs only the tracks
    still growing; a beam search keeps every beam until the end.
    """
    beam = options.strategy == "beam"
    width = options.beam_width if beam else 1
    b0, k = seeds.shape
    big_l = options.max_hits
    rows = b0 * width
    reads_hits = model.config.reads_hits
    device = next(model.parameters()).device
    seeds = seeds.to(device)
    seed_hits = None if seed_hits is None else seed_hits.to(device)
    tokens = torch.full((rows, big_l), vocab.pad_id, dtype=torch.long, device=device)
    tokens[:, :k] = seeds.repeat_interleave(width, dim=0)
    hits = torch.full((rows, big_l, 3), float("nan"), device=device)
    if seed_hits is not None:
        hits[:, :k] = seed_hits.repeat_interleave(width, dim=0)
    score = torch.zeros(rows, dtype=torch.float64, device=device)
    if width > 1:  # one live beam per track to begin with (no duplicates)
        score.view(b0, width)[:, 1:] = -math.inf
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    length = torch.full((rows,), k, dtype=torch.long, device=device)
    active = torch.arange(rows, device=device)  # the rows the stepper holds, in its order
    stepper = _Stepper(model, vocab, options)
    # greedy, unscored, causal: scores chosen from in row chunks, never the whole (b, v) at once
    fused = options.strategy == "greedy" and not options.score and stepper.causal
    stepper.start(tokens[:, :k], hits[:, :k] if reads_hits else None)
    for n in range(k, big_l + 1):
        if active.numel() == 0:
            break
        now = tokens[active, :n]
        if fused:
            chosen = _greedy_in_chunks(stepper, now, n, vocab, options)
        else:
            log_probs = stepper.log_probs(now, hits[active, :n] if reads_hits else None)
            norm = None  # a causal model's logits, normalised over every token (before the rules)
            if stepper.causal and options.scored:
                norm = torch.logsumexp(log_probs, dim=-1, keepdim=True)
                if beam:
                    log_probs = log_probs.sub_(norm)
            log_probs = _allowed(log_probs, now, n, vocab, options)
            if beam:
                chosen, parents, gained = _beam_choice(log_probs, score, finished, width, vocab)
                tokens, hits = tokens[parents], hits[parents]
                finished, length = finished[parents], length[parents]
                stepper.reorder(parents)
                score = score[parents] + gained
            else:
                chosen = _pick(log_probs, options, generator)
                gained = log_probs.gather(1, chosen[:, None])
                score[active] += (gained if norm is None else gained - norm).squeeze(1).double()
        live = ~finished[active]
        grows = live & (chosen != vocab.sep_id)
        where = stepper.locate(chosen)
        target = active[grows]
        if n < big_l:
            tokens[target, n] = chosen[grows]
            if where is not None:
                hits[target, n] = where[grows]
        length[target] += 1
        finished[active[live & ~grows]] = True
        if n == big_l:
            break
        if not beam and not bool(grows.all()):  # ended tracks leave the batch
            keep = grows.nonzero().squeeze(1)
            active = active[keep]
            stepper.reorder(keep)
            chosen = chosen[keep]
            where = None if where is None else where[keep]
            grows = grows[keep]
        fed = torch.where(grows, chosen, torch.full_like(chosen, vocab.pad_id))
        stepper.advance(fed, where)
    if width > 1:  # the best beam of each track
        best = score.view(b0, width).argmax(dim=1) + torch.arange(b0, device=device) * width
        tokens, hits, length, score = tokens[best], hits[best], length[best], score[best]
    keep_hits = torch.arange(big_l, device=device)[None, :] < length[:, None]
    tokens = torch.where(keep_hits, tokens, torch.full_like(tokens, vocab.pad_id))
    positions = hits.masked_fill(~keep_hits[..., None], float("nan")).cpu().numpy()
    return tokens.cpu().numpy(), length.cpu().numpy(), positions, score.cpu().numpy()


def _greedy_in_chunks(
    stepper: _Stepper,
    tokens: Tensor,
    n: int,
    vocab: ModuleVocab,
    options: DecodeOptions,
    chunk: int = 512,
) -> Tensor:
    """(b,) the most probable allowed token of a causal model's rows, ``chunk`` rows at a time:
    each chunk's scores are chosen from while they are still in the CPU's cache."""
    assert stepper.decoder is not None and stepper.hidden is not None
    chosen = []
    for lo in range(0, tokens.shape[0], chunk):
        logits = stepper.decoder.logits(stepper.hidden[lo : lo + chunk])
        logits = _allowed(logits, tokens[lo : lo + chunk], n, vocab, options)
        chosen.append(logits.max(dim=1).indices)
    return torch.cat(chosen) if chosen else tokens.new_zeros(0)


def _pick(log_probs: Tensor, options: DecodeOptions, generator: torch.Generator) -> Tensor:
    """(b,) greedy choice, or a draw with temperature and top-k."""
    if options.strategy == "greedy":
        return log_probs.max(dim=1).indices  # (max is several times faster than argmax on the CPU)
    logits = log_probs / options.temperature if options.temperature != 1.0 else log_probs
    if options.top_k > 0 and options.top_k < logits.shape[1]:
        threshold = torch.topk(logits, options.top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, -math.inf)
    # inverse CDF: one cumulative sum and a binary search per row (torch.multinomial is many
    # times slower over thousands of categories on the CPU); right=True never lands on a token
    # of probability 0
    cdf = torch.softmax(logits, dim=1).cumsum_(dim=1)
    u = torch.rand((cdf.shape[0], 1), generator=generator, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)


def _beam_choice(
    log_probs: Tensor, score: Tensor, finished: Tensor, width: int, vocab: ModuleVocab
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``width`` best continuations of each track's beams: chosen tokens (b,), the parent
    row of each (b,), and the log-probability each adds (b,). A finished beam continues only
    as itself (``[PAD]``, adding 0)."""
    b, v = log_probs.shape
    tracks = b // width
    step = log_probs.double()
    step[finished] = -math.inf
    step[finished, vocab.pad_id] = 0.0
    total = (score[:, None] + step).view(tracks, width * v)
    best, flat = torch.topk(total, width, dim=1)  # (tracks, width)
    parents = (flat // v + torch.arange(tracks, device=flat.device)[:, None] * width).reshape(-1)
    chosen = (flat % v).reshape(-1)
    gained = step.view(tracks, width * v).gather(1, flat).reshape(-1)
    gained = torch.where(torch.isfinite(best.reshape(-1)), gained, torch.zeros_like(gained))
    return chosen, parents, gained
