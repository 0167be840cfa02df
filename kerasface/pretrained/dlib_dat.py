"""A reader of dlib's binary network files (``.dat``), in NumPy: no dlib needed.

dlib writes a network with ``serialize(net, out)`` (``dlib/dnn/core.h``): the loss layer
(its version, then its details), then every layer from the top down, each writing its
version and *then its sub-network* before its own details, so the details of the layers
come out bottom-up (the input first). The file has no type information: the reader walks
the layer kinds of the network it expects (:data:`DLIB_RESNET_V1_KINDS`, from
``examples/dnn_face_recognition_ex.cpp``) and checks every layer's name string on the way.

dlib's primitives (``dlib/serialize.h``, ``dlib/cuda/tensor.h``):

- an integer: a control byte (low 4 bits: the number of bytes; bit 0x80: negative), then
  the magnitude's bytes, least significant first (0 is ``01 00``);
- a float (``float``/``double``): two integers, the mantissa and the exponent
  (``mantissa * 2**exponent``; exponents 32000, 32001, 32002 mean inf, -inf, NaN);
- a bool: the byte ``'1'`` or ``'0'``; a string: its length (an integer), then its bytes;
- a tensor: version 2, its four dimensions (samples, k, rows, columns) as integers, then its
  values as little-endian IEEE float32; an ``alias_tensor`` (a view's shape): version 1
  and the four dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasface.models.dlib_resnet import DLIB_RESNET_V1_LEVELS

__all__ = ["DatFormatError", "DatReader", "DlibLayer", "DlibNet", "DLIB_RESNET_V1_KINDS", "read_dlib_net"]


class DatFormatError(ValueError):
    """The file is not the dlib network this reader expects (or is damaged)."""


def _resnet_v1_kinds() -> tuple[str, ...]:
    """dlib's ``anet_type`` bottom-up: every ``add_layer`` / tag / skip, input excluded."""
    kinds = ["con", "affine", "relu", "max_pool"]
    for _level, _filters, down, blocks in DLIB_RESNET_V1_LEVELS:
        for i in range(1, blocks + 1):
            if down and i == 1:  # add_prev2<avg_pool<skip1<tag2<block<tag1<x>>>>>>
                kinds += ["tag", "con", "affine", "relu", "con", "affine", "tag", "skip",
                          "avg_pool", "add_prev", "relu"]
            else:  # add_prev1<block<tag1<x>>>
                kinds += ["tag", "con", "affine", "relu", "con", "affine", "add_prev", "relu"]
    kinds += ["avg_pool", "fc"]
    return tuple(kinds)


@dataclass
class DlibLayer:
    """One layer's details: its kind, the version string dlib wrote, its scalars and its parameters."""

    kind: str
    version: str
    attrs: dict = field(default_factory=dict)
    params: np.ndarray | None = None


@dataclass
class DlibNet:
    """A network read from a ``.dat`` file: the loss and input details and the layers, bottom-up."""

    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]

    def parameter_count(self) -> int:
        return sum(int(layer.params.size) for layer in self.layers if layer.params is not None)

    def with_params(self) -> list[DlibLayer]:
        """The layers that have parameters (con, affine, fc), bottom-up."""
        return [layer for layer in self.layers if layer.kind in ("con", "affine", "fc")]


class DatReader:
    """dlib's primitives, read in order from the bytes of a file (``path`` names it in errors)."""

    def __init__(self, data: bytes, path: str):
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str):
        raise DatFormatError(f"{self.path}: {what} at byte {self.pos}")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            self.fail(f"file ends while reading {n} bytes")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            self.pos -= 1
            self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        if self.data[self.pos] & 0x70:
            self.fail("an ASCII-format float (dlib before 2012) is not supported")
        mantissa = self.int()
        exponent = self.int()
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        b = self.take(1)
        if b not in (b"0", b"1"):
            self.pos -= 1
            self.fail(f"bad bool byte {b!r}")
        return b == b"1"

    def string(self) -> str:
        n = self.int()
        if n < 0 or n > 1 << 16:
            self.fail(f"implausible string length {n}")
        return self.take(n).decode("latin-1")

    def version(self, allowed) -> int:
        v = self.int()
        if v not in allowed:
            self.fail(f"unexpected version {v} (expected one of {sorted(allowed)})")
        return v

    def tensor(self) -> np.ndarray:
        self.version({2})
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            self.fail(f"negative tensor shape {shape}")
        n = int(np.prod(shape))
        values = np.frombuffer(self.take(4 * n), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.version({1})
        return tuple(self.int() for _ in range(4))

    def name(self, allowed) -> str:
        s = self.string()
        if s not in allowed:
            self.fail(f"layer name {s!r}, expected one of {sorted(allowed)}")
        return s


def _multipliers(r: DatReader) -> dict:
    return {"learning_rate_multiplier": r.float(), "weight_decay_multiplier": r.float(),
            "bias_learning_rate_multiplier": r.float(), "bias_weight_decay_multiplier": r.float()}


def _read_details(r: DatReader, kind: str) -> DlibLayer:
    if kind == "con":
        v = r.name({"con_4", "con_5", "con_6"})
        params = r.tensor().reshape(-1)
        attrs = {"num_filters": r.int(), "nr": r.int(), "nc": r.int(), "stride_y": r.int(),
                 "stride_x": r.int(), "padding_y": r.int(), "padding_x": r.int(),
                 "filters": r.alias_tensor(), "biases": r.alias_tensor()}
        attrs.update(_multipliers(r))
        attrs["use_bias"] = r.bool() if v in ("con_5", "con_6") else True
        if v == "con_6":
            attrs["use_relu"] = r.bool()
        return DlibLayer(kind, v, attrs, params)
    if kind == "affine":
        v = r.name({"affine_", "affine_2", "bn_con2"})
        if v == "bn_con2":  # a batch-norm layer: dlib turns it into an affine one when loading
            params = r.tensor().reshape(-1)
            attrs = {"gamma": r.alias_tensor(), "beta": r.alias_tensor(), "means": r.tensor(),
                     "invstds": r.tensor(), "running_means": r.tensor().reshape(-1),
                     "running_variances": r.tensor().reshape(-1), "num_updates": r.int(),
                     "running_stats_window_size": r.int()}
            attrs.update(_multipliers(r))
            attrs["eps"] = r.float()
            return DlibLayer(kind, v, attrs, params)
        params = r.tensor().reshape(-1)
        attrs = {"gamma": r.alias_tensor(), "beta": r.alias_tensor(), "mode": r.int()}
        if v == "affine_2":
            attrs["disabled"] = r.bool()
        return DlibLayer(kind, v, attrs, params)
    if kind in ("max_pool", "avg_pool"):
        v = r.name({f"{kind}_2"})
        attrs = {"nr": r.int(), "nc": r.int(), "stride_y": r.int(), "stride_x": r.int(),
                 "padding_y": r.int(), "padding_x": r.int()}
        return DlibLayer(kind, v, attrs)
    if kind == "relu":
        v = r.name({"relu_", "relu_2"})
        return DlibLayer(kind, v, {"disabled": r.bool()} if v == "relu_2" else {})
    if kind == "add_prev":
        return DlibLayer(kind, r.name({"add_prev_"}))
    if kind == "fc":
        v = r.name({"fc_2", "fc_3"})
        attrs = {"num_outputs": r.int(), "num_inputs": r.int()}
        params = r.tensor().reshape(-1)
        attrs.update(weights=r.alias_tensor(), biases=r.alias_tensor(), bias_mode=r.int())
        attrs.update(_multipliers(r))
        if v == "fc_3":
            attrs["use_bias"] = r.bool()
        return DlibLayer(kind, v, attrs, params)
    raise AssertionError(kind)  # pragma: no cover - the kinds are ours


def _read_layer_state(r: DatReader, version: int, *, on_input: bool) -> None:
    """What an ``add_layer`` writes after its details: flags and tensors of no use at inference."""
    r.bool()  # this_layer_setup_called
    r.bool()  # gradient_input_is_stale
    r.bool()  # get_output_and_gradient_input_disabled
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if on_input:
        r.tensor()  # grad_final
        if version >= 3:
            r.int()  # _sample_expansion_factor
    elif version == 2:
        r.tensor()  # params_grad


def read_dlib_net(path, kinds=None) -> DlibNet:
    """Read a dlib network file: by default dlib's face-recognition ResNet v1 (``anet_type``).

    ``kinds``: the network's layer kinds bottom-up (``"con"``, ``"affine"``, ``"relu"``,
    ``"max_pool"``, ``"avg_pool"``, ``"add_prev"``, ``"fc"``, ``"tag"``, ``"skip"``), the
    bottom one sitting on an ``input_rgb_image_sized``, the top one under a ``loss_metric``.
    Raises :class:`DatFormatError` (naming the file and the byte) when the file does not match.
    """
    path = Path(path)
    kinds = tuple(kinds) if kinds is not None else DLIB_RESNET_V1_KINDS
    r = DatReader(path.read_bytes(), str(path))
    r.version({1})  # add_loss_layer
    lv = r.name({"loss_metric_", "loss_metric_2"})
    loss = DlibLayer("loss_metric", lv, {"margin": r.float(), "distance_threshold": r.float()}
                     if lv == "loss_metric_2" else {"margin": 0.1, "distance_threshold": 0.75})
    # top-down: every layer's version, then its sub-network
    versions = {}
    for i in range(len(kinds) - 1, 0, -1):
        versions[i] = r.version({1} if kinds[i] in ("tag", "skip") else {1, 2})
    versions[0] = r.version({2, 3})  # the add_layer that sits on the input layer
    r.name({"input_rgb_image_sized"})
    means = (r.float(), r.float(), r.float())
    inp = DlibLayer("input", "input_rgb_image_sized", {"means": means, "nr": r.int(), "nc": r.int()})
    # bottom-up: each layer's details after its sub-network's
    layers = []
    for i, kind in enumerate(kinds):
        if kind in ("tag", "skip"):
            layers.append(DlibLayer(kind, kind))
            continue
        layers.append(_read_details(r, kind))
        _read_layer_state(r, versions[i], on_input=(i == 0))
    if r.pos != len(r.data):
        r.fail(f"{len(r.data) - r.pos} bytes left after the last layer")
    return DlibNet(loss, inp, layers)


DLIB_RESNET_V1_KINDS = _resnet_v1_kinds()
