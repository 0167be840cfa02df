"""kerasface.training.optim: optimizer defaults, SGDR schedule vs the torch formula, freezing and gradual
unfreezing in fit."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kerasface.training.optim import GradualUnfreezing, cosine_warm_restarts, freeze_first, make_optimizer


def sgdr(step, T0, eta_max, eta_min, T_mult=1):
    """torch.optim.lr_scheduler.CosineAnnealingWarmRestarts (stepped once per batch), closed form."""
    if T_mult == 1:
        T_cur, T_i = step % T0, T0
    else:
        n = int(math.log(step / T0 * (T_mult - 1) + 1, T_mult))
        T_cur = step - T0 * (T_mult ** n - 1) / (T_mult - 1)
        T_i = T0 * T_mult ** n
    return eta_min + (eta_max - eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2


def test_make_optimizer_defaults():
    adam = make_optimizer("adam", 1e-3)
    assert isinstance(adam, keras.optimizers.Adam) and not isinstance(adam, keras.optimizers.AdamW)
    assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.9, 0.999, 1e-8) and adam.weight_decay is None
    adamw = make_optimizer("adamw", 3e-4)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 0.01 and adamw.epsilon == 1e-8
    sched = cosine_warm_restarts(1e-3, 10, 2, 1e-5)
    opt = make_optimizer("adam", schedule=sched)
    assert opt._learning_rate is sched
    with pytest.raises(ValueError):
        make_optimizer("sgdw")


@pytest.mark.parametrize("t_mul", [1.0, 2.0])
def test_cosine_warm_restarts_matches_sgdr(t_mul):
    spe, cycle, lr0, lr_min = 7, 3, 1e-3, 3e-5  # report 003: T_0 = 3 epochs, eta_min 3e-5
    s = cosine_warm_restarts(lr0, spe, cycle, lr_min, t_mul=t_mul)
    T0 = spe * cycle
    assert s.first_decay_steps == T0 and s.alpha == pytest.approx(lr_min / lr0)
    steps = [0, 1, 5, T0 // 2, T0 - 1, T0, T0 + 1, 2 * T0 - 1, 2 * T0, 3 * T0 + 4, 7 * T0 + 3]
    got = np.array([float(s(k)) for k in steps])
    ref = np.array([sgdr(k, T0, lr0, lr_min, int(t_mul)) for k in steps])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-9)
    assert got[steps.index(T0)] == pytest.approx(lr0)  # warm restart to the peak
    assert got.min() >= lr_min - 1e-9


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="b0")(inp)
    h = keras.layers.BatchNormalization(name="b0_bn")(h)
    h = keras.layers.Dense(8, activation="relu", name="b1")(h)
    h = keras.layers.Dense(8, activation="relu", name="b2")(h)
    out = keras.layers.Dense(3, name="head")(h)
    return keras.Model(inp, out)


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n)


def _w(model, name):
    return [np.array(v) for v in model.get_layer(name).weights]


def test_freeze_first_keeps_weights_and_bn_stats():
    x, y = _data()
    m = _mlp()
    names = freeze_first(m, 2)
    assert names == ["b0", "b0_bn"]
    m.compile(make_optimizer("adamw", 1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {n: _w(m, n) for n in ("b0", "b0_bn", "b1")}
    m.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for a, b in zip(before["b0"] + before["b0_bn"], _w(m, "b0") + _w(m, "b0_bn")):
        np.testing.assert_array_equal(a, b)  # no update, no weight decay, BN moving stats untouched
    assert any(not np.array_equal(a, b) for a, b in zip(before["b1"], _w(m, "b1")))
    assert freeze_first(_mlp(), prefix="b1") == ["b1"]
    with pytest.raises(ValueError):
        freeze_first(_mlp(), prefix="nope")


class _Snap(keras.callbacks.Callback):
    """Weights of each layer at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.w = []

    def on_epoch_end(self, epoch, logs=None):
        self.w.append({layer.name: [np.array(v) for v in layer.weights]
                       for layer in self.model.layers if layer.weights})


def _changed(a, b):
    return any(not np.array_equal(u, v) for u, v in zip(a, b))


def test_gradual_unfreezing_optimizer_sees_the_change():
    x, y = _data()
    m = _mlp()
    opt = make_optimizer("adamw", 1e-2)
    m.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = {layer.name: [np.array(v) for v in layer.weights] for layer in m.layers if layer.weights}
    gu = GradualUnfreezing(blocks=[["b0", "b0_bn"], "b1", "b2", "head"], every=2)
    snap = _Snap()
    m.fit(x, y, batch_size=16, epochs=6, verbose=0, callbacks=[gu, snap])
    # head trains from epoch 0; b2 from epoch 2; b1 from 4; b0 never (6 epochs)
    first_change = {}
    for name in ("head", "b2", "b1", "b0", "b0_bn"):
        prev = start[name]
        first_change[name] = next((e for e, s in enumerate(snap.w)
                                   if _changed(prev if e == 0 else snap.w[e - 1][name], s[name])), None)
    assert first_change == {"head": 0, "b2": 2, "b1": 4, "b0": None, "b0_bn": None}
    assert gu.unfrozen == [(-1, 1), (2, 2), (4, 3)]
    # AdamW slots exist for b2's kernel; zero while frozen (checked via a fresh run below), used after
    k = m.get_layer("b2").kernel
    slots = [v for v in opt.variables if v.shape == k.shape and "b2" in v.path]
    assert slots and all(np.abs(np.array(v)).max() > 0 for v in slots)


def test_gradual_unfreezing_slots_zero_while_frozen_and_needed_rebuild():
    x, y = _data()
    m = _mlp()
    opt = make_optimizer("adam", 1e-2)
    m.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    gu = GradualUnfreezing(blocks=["b0", "b1", "b2", "head"], every=5)
    m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[gu])
    k = m.get_layer("b1").kernel
    slots = [v for v in opt.variables if v.shape == k.shape and "b1" in v.path]
    assert len(slots) == 2 and all(np.abs(np.array(v)).max() == 0 for v in slots)
    # without the rebuild, flipping `trainable` after tracing changes nothing (why the callback rebuilds)
    m2 = _mlp()
    m2.get_layer("b1").trainable = False
    m2.compile(make_optimizer("adam", 1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m2.fit(x, y, batch_size=16, epochs=1, verbose=0)
    m2.get_layer("head").trainable = False  # stale train function still updates the head
    h = _w(m2, "head")
    m2.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert _changed(h, _w(m2, "head"))
    m2.make_train_function(force=True)
    h = _w(m2, "head")
    m2.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not _changed(h, _w(m2, "head"))


def test_gradual_unfreezing_refuses_optimizer_without_the_variables():
    x, y = _data(16)
    m = _mlp()
    freeze_first(m, 3)
    m.compile(make_optimizer("adam", 1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, batch_size=16, epochs=1, verbose=0)  # optimizer built without b0, b1
    with pytest.raises(ValueError, match="optimizer was built without"):
        m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[GradualUnfreezing()])
