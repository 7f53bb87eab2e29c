"""The learned attacks' networks: the MLP, SAMIA's self-attention net, and their dropout.

Every network here trains through the one training loop (:func:`mia_ray.training.train`),
alone or stacked with others of its shape: its dropouts say how they draw their masks
(:meth:`Dropout.draw_mask`), so a stacked fit can draw each network's masks from that
network's own generator.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class Dropout(nn.Module):
    """Inverted dropout, as ``nn.Dropout``, with masks drawn as ``uniform >= p``.

    ``nn.Dropout`` on a CPU draws its masks with ``bernoulli_``, which on non-Intel
    CPUs (no MKL stream) costs one double-precision uniform per element, serially:
    a fifth of every MLP attack's training time and a quarter of SAMIA's in the
    profile. ``torch.rand`` needs one float per element and the mask is the same in
    distribution (keep with probability 1 - p, scaled by 1 / (1 - p)).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def draw_mask(self, out: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Fill ``out`` with this dropout's scaled keep-mask (the global RNG if no generator)."""
        torch.rand(out.shape, generator=generator, out=out).ge_(self.p).mul_(1.0 / (1.0 - self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # autograd keeps the mask (not x) for the backward pass, as it would nn.Dropout's.
        keep = torch.empty_like(x)
        self.draw_mask(keep)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def init_attack_weights(module: nn.Module) -> nn.Module:
    """Xavier-normal weights and zero biases on every ``nn.Linear`` layer; returns ``module``.

    As the authors' ``weight_init``, which matches the class name ``Linear`` exactly:
    attention's own projections (``in_proj``, and ``out_proj``, an
    :class:`OutProjection`) keep PyTorch's initialisation. Draws from the global torch
    RNG, which :meth:`LearnedAttack.fit` seeds with the fit's seed.
    """
    with torch.no_grad():
        for layer in module.modules():
            if type(layer) is nn.Linear:
                nn.init.xavier_normal_(layer.weight)
                if layer.bias is not None:
                    layer.bias.zero_()
    return module


def mlp(in_features: int) -> nn.Sequential:
    """The MLP attack network: d -> 512 -> 256 -> 128 -> 2, dropout 0.2 after the first two."""
    return init_attack_weights(nn.Sequential(
        nn.Linear(in_features, 512), nn.ReLU(), Dropout(0.2),
        nn.Linear(512, 256), nn.ReLU(), Dropout(0.2),
        nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, 2),
    ))


class OutProjection(nn.Linear):
    """Attention's output projection: a Linear subclass, as ``nn.MultiheadAttention``'s,
    so that :func:`init_attack_weights` leaves it at PyTorch's initialisation too."""


class SelfAttention(nn.Module):
    """Multi-head self-attention with its attention dropout as a :class:`Dropout` module.

    The parameters, their names and their initialisation (in the same RNG order) are
    ``nn.MultiheadAttention``'s; the attention is the math of its CPU path, written
    out so that the attention-weight dropout is a module whose masks a stacked fit
    can supply (``F.scaled_dot_product_attention`` draws its dropout internally).
    """

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model))
        self.out_proj = OutProjection(d_model, d_model)
        self.dropout = Dropout(dropout)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        head = d // self.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, t, 3, self.heads, head).permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax((q * head ** -0.5) @ k.transpose(-2, -1), dim=-1)
        out = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, t, d)
        return self.out_proj(out)


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` (post-norm, GELU, batch first) with :class:`SelfAttention`.

    Same parameter names and initialisation order, so weights saved from the generic
    layer load here.
    """

    def __init__(self, d_model: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = SelfAttention(d_model, heads, dropout)
        self.linear1 = nn.Linear(d_model, feedforward)
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.self_attn(x)))
        ff = self.linear2(self.dropout(F.gelu(self.linear1(x))))
        return self.norm2(x + self.dropout2(ff))


class Encoder(nn.Module):
    """A stack of identical-at-init layers, as ``nn.TransformerEncoder`` clones its layer."""

    def __init__(self, layer: EncoderLayer, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class SAMIANet(nn.Module):
    """Self-attention attack network: one token per class, no positional encoding.

    Input is the concatenation [prob | sens | one-hot label] of length 3C. After
    BatchNorm over those 3C features, token c gathers (p_c, sens_c, y_c), so every
    class is described by the same three quantities and attention compares classes.
    """

    # Long fits train through the eager backend's compiled loss (mia_ray/eager.py):
    # measured x1.37 a step on a CPU, where GELU, LayerNorm and a softmax over C classes bound it.
    compiles = True

    def __init__(self, num_classes: int, *, d_model: int = 64, heads: int = 4,
                 layers: int = 3, feedforward: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.BatchNorm1d(3 * num_classes)
        self.embed = nn.Sequential(nn.Linear(3, d_model), nn.GELU())
        self.encoder = Encoder(EncoderLayer(d_model, heads, feedforward, dropout), layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(num_classes * d_model, 64),
                                  nn.ReLU(), nn.Linear(64, 2))
        init_attack_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3C) laid out as three blocks of C -> (B, 3, C) -> (B, C, 3): token per class.
        tokens = self.norm(x).view(len(x), 3, self.num_classes).transpose(1, 2)
        return self.head(self.encoder(self.embed(tokens)))
