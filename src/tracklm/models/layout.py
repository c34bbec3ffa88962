"""Where the encoder's packed token rows sit in the (b, t) input grid.

The encoder works on the n real tokens only, packed as (n, d) rows: every per-token layer
(projections, feed-forward, LayerNorm, dropout) then skips the padding, about a fifth of the
positions for pairs of 4 to 8 hits. Attention moves the rows to the grid and masks padded keys.

Shape legend: ``b`` batch, ``t`` tokens (input width), ``n`` real tokens in the batch, ``c`` any
feature width.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class TokenLayout:
    """The packing of one batch; index tensors derived from it are built once and kept.

    Attributes
    ----------
    batch, width : b and t.
    real : (n,) indices of the real tokens in the flattened (b * t) grid, row-major; None when
        every token is real (then n = b * t and packing is a reshape).
    key_mask : (b, 1, 1, t) True on real keys, or None without padding.
    causal : each query attends only to the keys at or before its own position.
    """

    batch: int
    width: int
    real: Tensor | None = None
    key_mask: Tensor | None = None
    causal: bool = False
    _memo: dict[Hashable, Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls, attention_mask: Tensor | None, batch: int, width: int, causal: bool = False
    ) -> TokenLayout:
        """The layout of a (b, t) bool ``attention_mask`` (None: every token real), with
        ``causal`` attention or not.

        An all-real batch needs neither mask nor packing; a traced or compiled graph keeps
        both, since the next batch may have padding.
        """
        layout = cls(batch=batch, width=width, causal=causal)
        if attention_mask is not None:
            tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()  # type: ignore[no-untyped-call]
            if tracing or not bool(attention_mask.all()):
                layout.real = attention_mask.reshape(-1).nonzero().squeeze(1)  # (n,)
                layout.key_mask = attention_mask[:, None, None, :]  # (b, 1, 1, t)
        return layout

    def cached(self, key: Hashable, build: Callable[[], Tensor]) -> Tensor:
        """``build()``, computed on the first call with ``key`` and kept for the batch.

        Every layer of the encoder reads the same index and mask tensors; callers outside this
        module (the CPU kernels, the ONNX export) keep theirs here too, under their own keys.
        """
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    @property
    def device(self) -> torch.device:
        mask = self.key_mask if self.key_mask is not None else self.real
        return mask.device if mask is not None else torch.device("cpu")

    @property
    def num_real(self) -> int:
        """n, the number of packed rows."""
        # no int(): a traced graph keeps n dynamic
        return self.batch * self.width if self.real is None else self.real.shape[0]

    def source(self) -> Tensor:
        """(b * t,) the packed row of each grid position; padding points at row n."""

        def build() -> Tensor:
            if self.real is None or self.key_mask is None:
                return torch.arange(self.batch * self.width, device=self.device)
            flat = self.key_mask.reshape(-1)
            rank = flat.long().cumsum(0) - 1
            return torch.where(flat, rank, torch.full_like(rank, self.num_real))

        return self.cached("source", build)

    def any_source(self) -> Tensor:
        """(b * t,) the packed row of each grid position, row 0 at padding."""

        def build() -> Tensor:
            source = self.source()
            return torch.where(source < self.num_real, source, torch.zeros_like(source))

        return self.cached("any_source", build)

    @property
    def masked(self) -> bool:
        """True when some query may not attend to some key (padding, or causal attention)."""
        return self.key_mask is not None or self.causal

    def attention_mask(self) -> Tensor | None:
        """(b, 1, 1, t) or, causal, (b or 1, 1, t, t) bool: True where a query may attend to a
        key; None when every query attends to every key."""
        if not self.causal:
            return self.key_mask

        def build() -> Tensor:
            t = self.width
            device = self.key_mask.device if self.key_mask is not None else self.device
            lower = torch.ones(t, t, dtype=torch.bool, device=device).tril()[None, None]
            return lower if self.key_mask is None else lower & self.key_mask

        return self.cached("attention_mask", build)

    def key_bias(self, dtype: torch.dtype) -> Tensor:
        """``attention_mask()`` as an additive bias: 0 where a query may attend to a key, -inf
        elsewhere; (b, 1, 1, t), or (b or 1, 1, t, t) causal."""
        mask = self.attention_mask()
        assert mask is not None

        def build() -> Tensor:
            zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
            return zeros.masked_fill_(~mask, float("-inf"))

        return self.cached(("key_bias", dtype), build)

    def pack(self, grid: Tensor) -> Tensor:
        """(b, t, ...) -> (n, ...) real rows."""
        flat = grid.reshape(self.batch * self.width, *grid.shape[2:])
        return flat if self.real is None else flat.index_select(0, self.real)

    def unpack(self, rows: Tensor) -> Tensor:
        """(n, c) -> (b, t, c), zeros at padded positions."""
        if self.real is not None:
            grid = rows.new_zeros(self.batch * self.width, rows.shape[-1])
            rows = grid.index_copy_(0, self.real, rows)
        return rows.view(self.batch, self.width, -1)

    def spread(self, rows: Tensor) -> Tensor:
        """(n, c) -> (b, t, c) with a copy of some real row at each padded position.

        One gather, where ``unpack`` fills the whole grid with zeros first: for the inputs of
        attention, whose padded keys are masked and padded queries dropped, any finite values
        will do at the padding (their gradients are zero).
        """
        if self.real is None:
            return rows.view(self.batch, self.width, -1)
        return rows.index_select(0, self.any_source()).view(self.batch, self.width, -1)

    def rows_at(self, at: Tensor) -> Tensor:
        """(m,) flattened grid positions -> (m,) packed rows; a padded position gets row n - 1."""
        if self.real is None:
            return at
        return self.source().index_select(0, at).clamp(max=self.num_real - 1)
