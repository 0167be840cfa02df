"""Parameters, multiply-accumulates and activation memory of a Keras model.

How each figure is counted (printed by ``kerasface summary``):

* **trainable params**: what a PyTorch profiler (torchstat, torchsummary)
  calls "params": weights, biases, BN gamma and beta, PReLU alphas.
* **total params**: Keras's ``count_params()``, which adds the non-trainable
  BN moving mean and variance.
* **MACs**: multiply-accumulates of one sample in convolutions (grouped and
  depthwise included) and dense layers, ``out_h * out_w * out_c * kh * kw *
  in_c / groups``; BN, activations, additions, max/average pooling and SE
  scaling are not counted. Layers defining ``macs(output_shape)`` (kerasface's
  ``L2Pooling2D`` and ``LocalResponseNormalization``: one square-accumulate
  per window element) count what that returns. Many papers call this figure
  "FLOPs".
* **activation memory**: the sum of every layer's float32 output for one
  sample (inputs excluded), in MB of 2**20 bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras

from kerasface.layers import GroupConv2D

__all__ = ["ModelProfile", "profile_model", "format_profile"]


@dataclass
class ModelProfile:
    name: str
    trainable_params: int
    non_trainable_params: int
    macs: int
    activation_bytes: int
    layers: list = field(default_factory=list)  # (name, class, output shape, params, macs)

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_params": self.total_params,
            "macs": self.macs,
            "activation_mb": self.activation_bytes / 2**20,
        }


def _count(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


def _layer_macs(layer, out_shape) -> int:
    if isinstance(layer, GroupConv2D) or callable(getattr(layer, "macs", None)):
        return layer.macs(out_shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return int(math.prod(out_shape[1:]) * kh * kw)
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = layer.kernel.shape[2]  # already in_channels / groups
        return int(math.prod(out_shape[1:]) * kh * kw * cin)
    if isinstance(layer, keras.layers.Dense):
        return int(math.prod(out_shape[1:]) * layer.kernel.shape[0])
    return 0


def _walk(model, rows):
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            _walk(layer, rows)
            continue
        out = layer.output
        outs = out if isinstance(out, (list, tuple)) else [out]
        shape = tuple(outs[0].shape)
        elems = sum(math.prod(o.shape[1:]) for o in outs)
        rows.append((layer.name, type(layer).__name__, shape, _count(layer.trainable_weights),
                     _layer_macs(layer, shape), elems))


def profile_model(model: keras.Model) -> ModelProfile:
    """Profile a built functional model (nested models are walked once each call)."""
    rows: list = []
    _walk(model, rows)
    return ModelProfile(
        name=model.name,
        trainable_params=_count(model.trainable_weights),
        non_trainable_params=_count(model.non_trainable_weights),
        macs=sum(r[4] for r in rows),
        activation_bytes=4 * sum(r[5] for r in rows),
        layers=[r[:5] for r in rows],
    )


def format_profile(p: ModelProfile, per_layer: bool = False) -> str:
    lines = []
    if per_layer:
        lines.append(f"{'layer':<40} {'class':<22} {'output':<22} {'params':>10} {'MACs':>14}")
        for name, cls, shape, params, macs in p.layers:
            lines.append(f"{name:<40} {cls:<22} {str(shape[1:]):<22} {params:>10,} {macs:>14,}")
        lines.append("")
    lines += [
        f"model                 {p.name}",
        f"trainable params      {p.trainable_params:,}   "
        "(PyTorch-profiler count: weights, BN gamma/beta, PReLU alphas)",
        f"non-trainable params  {p.non_trainable_params:,}   (BN moving mean/variance)",
        f"total params          {p.total_params:,}   (Keras count_params)",
        f"MACs                  {p.macs:,} ({p.macs / 1e6:.2f}M)   (conv + dense multiply-accumulates, one sample)",
        f"activation memory     {p.activation_bytes / 2**20:.2f} MB   (sum of float32 layer outputs, one sample)",
    ]
    return "\n".join(lines)
