"""What the benchmark runs: configurations, cells, modes, frameworks, FLOP counts and validation.

This module imports only the standard library, so the parent process can validate a request
before it starts any framework.

FLOP count (GEMMs of the cell only; the pointwise gate math is not counted). A layer with input
width I, H units and G gate blocks (G = 4 for LSTM: i, j, f, o; G = 3 for GRU: r, u and the
candidate) multiplies ``[x_t, h_{t-1}]`` of shape [B, I+H] by a kernel [I+H, G*H] at each of T
steps::

    forward  F = 2 * B * T * (I + H) * G * H
    backward   = 2 * F  (d[x, h] = dGates @ kernel^T and dKernel = [x, h]^T @ dGates)
    forward+backward = 3 * F

Stacks (C4) sum F over their layers, each layer's I being the width below it.
"""
import collections

__all__ = ["Config", "CONFIGS", "DEFAULT_CONFIGS", "DEVICES", "parse_device", "CELLS", "MODES", "MODE_LABELS", "FRAMEWORKS", "FRAMEWORK_LABELS",
           "DEFAULT_FRAMEWORKS", "SWEEP_FRAMEWORKS", "GATES", "Protocol", "PROTOCOLS",
           "forward_flops", "mode_flops", "parse_configs", "parse_custom", "parse_frameworks",
           "parse_cells", "parse_modes", "parse_positive_int", "parse_int_list", "sweep_configs",
           "DEFAULT_SWEEP_T", "SWEEP_DIMS", "DEFAULT_SWEEP", "parse_sweep_dim", "sweep_value"]


class Config(collections.namedtuple("Config", "name B T I H description sample")):
    """One benchmark configuration.

    B: batch, T: steps, I: input width, H: tuple of layer widths (bottom first), sample: True for
    the batch-1 sampling case (T single steps with the state carried, forward only).
    """
    __slots__ = ()

    @property
    def layers(self):
        """[(input width, units)] per layer, bottom first."""
        out, width = [], self.I
        for h in self.H:
            out.append((width, h))
            width = h
        return out

    @property
    def H_label(self):
        return "+".join(str(h) for h in self.H)

    def as_dict(self):
        return {"name": self.name, "B": self.B, "T": self.T, "I": self.I, "H": list(self.H),
                "description": self.description, "sample": self.sample}

    @classmethod
    def from_dict(cls, d):
        return cls(d["name"], int(d["B"]), int(d["T"]), int(d["I"]), tuple(int(h) for h in d["H"]),
                   d.get("description", ""), bool(d.get("sample", False)))


def _cfg(name, B, T, I, H, description, sample=False):
    return Config(name, B, T, I, tuple(H) if isinstance(H, (list, tuple)) else (H,), description, sample)


CONFIGS = collections.OrderedDict((c.name, c) for c in [
    _cfg("C1", 128, 28, 28, 128, "MNIST rows"),
    _cfg("C2", 64, 100, 256, 512, "mid-size"),
    _cfg("C3", 32, 200, 128, 256, "long sequence"),
    _cfg("C4", 128, 10, 1, (30, 1), "two-layer sine model, 30 then 1 units"),
    _cfg("C5", 1, 100, 65, 256, "batch-1 text sampling: 100 single steps, state carried (one-hot "
         "of a 65-char vocabulary)", sample=True),
    _cfg("C6", 256, 100, 512, 1024, "large: B=256, H=1024 (a GPU-sized layer; in the default set "
         "of --device cuda only)"),
])
# the default configurations of each device (C6 takes minutes per call on a 2-core CPU)
DEFAULT_CONFIGS = {"cpu": ("C1", "C2", "C3", "C4", "C5"), "cuda": ("C1", "C2", "C3", "C5", "C6")}
DEVICES = ("cpu", "cuda")

CELLS = ("lstm", "gru")
GATES = {"lstm": 4, "gru": 3}
MODES = ("fwd", "fwdbwd")
MODE_LABELS = {"fwd": "forward", "fwdbwd": "forward+backward", "step": "100 single steps"}
# keras: tf.keras.layers.LSTM/GRU (GRU with reset_after=False, TF1's formulation);
# keras-ra: the GRU with reset_after=True (Keras' default, the cuDNN/PyTorch formulation).
FRAMEWORKS = ("npl", "tf1", "keras", "keras-ra", "torch")
FRAMEWORK_LABELS = {"npl": "npl", "tf1": "TF1 graph", "keras": "Keras", "keras-ra": "Keras(ra)",
                    "torch": "PyTorch"}
DEFAULT_FRAMEWORKS = ("npl", "tf1", "keras", "keras-ra", "torch")
SWEEP_FRAMEWORKS = ("npl", "torch")
DEFAULT_SWEEP_T = (10, 20, 50, 100, 200, 500, 1000, 2000)
# --sweep DIM: the dimension swept (steps T, batch B, hidden units H of a one-layer configuration)
# and its default values
SWEEP_DIMS = ("T", "B", "H")
DEFAULT_SWEEP = {"T": DEFAULT_SWEEP_T, "B": (1, 4, 16, 32, 64, 128, 256, 512),
                 "H": (16, 32, 64, 128, 256, 512, 1024)}


class Protocol(collections.namedtuple("Protocol", "warmup repeats min_run_s")):
    """Timing protocol: ``warmup`` untimed calls, then ``repeats`` timed runs of n calls each, n
    chosen so that one run lasts at least ``min_run_s`` (per-batch time = run time / n)."""
    __slots__ = ()


PROTOCOLS = {"full": Protocol(warmup=2, repeats=7, min_run_s=0.05),
             "quick": Protocol(warmup=1, repeats=3, min_run_s=0.005),
             "sweep": Protocol(warmup=1, repeats=3, min_run_s=0.02)}


def forward_flops(config, cell):
    """GEMM FLOPs of one forward pass over the configuration: sum of 2*B*T*(I+H)*G*H per layer."""
    G = GATES[cell]
    return sum(2 * config.B * config.T * (i + h) * G * h for i, h in config.layers)


def mode_flops(config, cell, mode):
    """FLOPs counted for a mode: F for a forward ("fwd", "step"), 3F for "fwdbwd"."""
    f = forward_flops(config, cell)
    return 3 * f if mode == "fwdbwd" else f


# ----------------------------------------------------------------------------- validation
def parse_positive_int(text, name):
    """Parse ``text`` as an integer >= 1, or raise ValueError naming ``name``."""
    try:
        v = int(str(text).strip())
    except (TypeError, ValueError):
        raise ValueError("%s must be a positive integer, got %r" % (name, text)) from None
    if v < 1:
        raise ValueError("%s must be a positive integer, got %d" % (name, v))
    return v


def parse_int_list(text, name):
    """Parse '10,20,50' into a sorted list of distinct positive integers."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError("%s must be a comma-separated list of positive integers, got %r" % (name, text))
    return sorted({parse_positive_int(p, "%s entry" % name) for p in parts})


def _names(text, allowed, name, aliases=None):
    aliases = aliases or {}
    parts = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError("%s must name at least one of %s, got %r" % (name, ", ".join(allowed), text))
    out = []
    for p in parts:
        p = aliases.get(p, p)
        if p not in allowed:
            raise ValueError("%s: unknown name %r; expected a comma-separated subset of %s"
                             % (name, p, ", ".join(allowed)))
        if p not in out:
            out.append(p)
    return out


def parse_frameworks(text, allowed=FRAMEWORKS, name="--frameworks"):
    aliases = {"pytorch": "torch", "tensorflow": "tf1", "tf": "tf1", "keras-reset-after": "keras-ra"}
    return _names(text, allowed, name, aliases)


def parse_device(text):
    """'cpu' or 'cuda' (aliases 'gpu', 'cupy'), or raise ValueError naming --device."""
    key = str(text).strip().lower()
    key = {"gpu": "cuda", "cupy": "cuda"}.get(key, key)
    if key not in DEVICES:
        raise ValueError("--device must be one of %s, got %r" % (", ".join(DEVICES), text))
    return key


def parse_cells(text):
    return _names(text, CELLS, "--cells")


def parse_modes(text):
    return _names(text, MODES, "--modes", {"forward": "fwd", "fwd+bwd": "fwdbwd", "train": "fwdbwd"})


def parse_configs(text, extra=None):
    """Names -> [Config]; ``extra`` holds custom configurations (name -> Config) that may be named."""
    table = collections.OrderedDict(CONFIGS)
    table.update(extra or {})
    upper = {k.upper(): k for k in table}
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError("--configs must name at least one of %s, got %r" % (", ".join(table), text))
    out = []
    for p in parts:
        key = upper.get(p.upper())
        if key is None:
            raise ValueError("--configs: unknown configuration %r; expected a comma-separated subset "
                             "of %s (or add one with --custom B,T,I,H)" % (p, ", ".join(table)))
        if table[key] not in out:
            out.append(table[key])
    return out


def parse_custom(text, name):
    """'B,T,I,H' (H may be '30+1' for a stack) -> Config called ``name``; every size must be >= 1."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4:
        raise ValueError("--custom must be B,T,I,H (four sizes, H may be 30+1 for a stack), got %r"
                         % (text,))
    B = parse_positive_int(parts[0], "--custom batch B")
    T = parse_positive_int(parts[1], "--custom steps T")
    I = parse_positive_int(parts[2], "--custom input width I")
    hs = [p for p in parts[3].split("+")]
    H = tuple(parse_positive_int(h, "--custom hidden units H") for h in hs)
    return Config(name, B, T, I, H, "custom %s" % text.strip(), False)


def parse_sweep_dim(text):
    """'T', 'B' or 'H' (case-insensitive) -> the dimension's name, or ValueError naming --sweep."""
    d = str(text).strip().upper()
    if d not in SWEEP_DIMS:
        raise ValueError("--sweep must be one of %s (steps, batch, hidden units), got %r"
                         % (", ".join(SWEEP_DIMS), text))
    return d


def sweep_value(config, dim):
    """The value of the swept dimension in ``config`` (H: the width of its one layer)."""
    return config.H[0] if dim == "H" else getattr(config, dim)


def sweep_configs(base, values, dim="T"):
    """The configuration ``base`` with ``dim`` (T, B or H) replaced by each value (names like
    'C1@T=100', 'C1@B=64', 'C1@H=512')."""
    flag = "--sweep-T" if dim == "T" else "--sweep %s" % dim
    if base.sample:
        raise ValueError("%s needs a sequence configuration, got %s (the sampling case)" % (flag, base.name))
    if dim == "H" and len(base.H) != 1:
        raise ValueError("--sweep H needs a one-layer configuration, got %s (H=%s, %d layers)"
                         % (base.name, base.H_label, len(base.H)))
    new = {"T": lambda v: {"T": v}, "B": lambda v: {"B": v}, "H": lambda v: {"H": (v,)}}[dim]
    return [base._replace(name="%s@%s=%d" % (base.name, dim, v), **new(v)) for v in values]
