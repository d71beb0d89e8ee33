"""What every token mixer shares: the `forward(x, hw)` interface, one constructor for the query/key/value
and output projections, and the registry that `attention=<name>` looks names up in.

A mixer registers itself where it is defined, with `@register_mixer("name")`. Every module of this
package is imported when the package is (mixers/__init__.py), so a new mixer is one file here plus
one file in conf/attention/. A mixer outside the package is named by its import path instead
(`attention.name=mypackage.mymixer.MyMixer`): importing it is enough.
"""

import inspect

from torch import nn

from ..attention import RecordableAttention
from ..layers import head_dim, resolve_variant

MIXERS: dict[str, type[nn.Module]] = {}

# Per-block settings the backbone offers; a mixer receives those its constructor names.
STAGE_SETTINGS = ("sr_ratio", "window_size", "shift")
PROJECTIONS = ("qkv", "q_kv", "q")


def register_mixer(name: str):
    """Class decorator: make the mixer available as `attention=<name>`."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        if MIXERS.get(name, cls) is not cls:
            raise ValueError(f"attention={name!r} is registered twice: {MIXERS[name].__name__} and {cls.__name__}")
        MIXERS[name] = cls
        return cls

    return register


class TokenMixer(RecordableAttention):
    """Maps (B, N, C) tokens of an H x W map, hw = (H, W), to (B, N, C).

    The constructor every mixer shares builds the projections, in the published models' module
    names so that checkpoints keep their keys, as the class's `projections` says:
    - "qkv": one `qkv` Linear (dim -> 3 dim), as ViT and Swin;
    - "q_kv": `q` (dim -> dim) and `kv` (dim -> 2 dim), keys and values from another map (PVT);
    - "q": `q` only, the subclass builds its keys and values (Shunted's per-scale branches);
    then the output `proj` and its dropout. A subclass that needs more takes its own options first
    and passes the rest on: `def __init__(self, dim, num_heads, sr_ratio=1, **options)`.
    `attend` (RecordableAttention) is fused SDPA.
    """

    projections = "qkv"

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        head_dim(dim, num_heads)
        if self.projections not in PROJECTIONS:
            raise ValueError(f"{type(self).__name__}.projections={self.projections!r}; expected one of {PROJECTIONS}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        if self.projections == "qkv":
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
        if self.projections == "q_kv":
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)


def accepted_options(cls: type) -> set[str]:
    """The keyword arguments a mixer's constructor takes, with those its `**options` pass on to its bases."""
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        accepted |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return accepted


def build_mixer(name, dim: int, num_heads: int, stage_settings: dict, **kwargs) -> nn.Module:
    cls = resolve_variant("attention", name, MIXERS)
    accepted = accepted_options(cls)
    kwargs.update({k: v for k, v in stage_settings.items() if k in accepted})
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        allowed = sorted(set(accepted) - {"dim", "num_heads", *STAGE_SETTINGS})
        raise ValueError(f"attention option(s) {unknown} not accepted by {cls.__name__}; allowed: {allowed}")
    return cls(dim, num_heads, **kwargs)
