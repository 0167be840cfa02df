"""FusedAdam / FusedAdamW: Keras's Adam and AdamW with TensorFlow's fused update per variable.

Checked against a NumPy Adam written from the paper's update (not against Keras), against Keras's own
optimizers, on degenerate gradients, under a MirroredStrategy over two logical CPUs, through save and
load, and for what they are for: far fewer operations in a traced update."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.optimizers import FusedAdam, FusedAdamW

REPO = Path(__file__).resolve().parents[1]


def numpy_adam(w, grads, lr, b1=0.9, b2=0.999, eps=1e-7, weight_decay=0.0):
    """Adam with bias correction folded into the rate and epsilon outside the square root (Keras's and
    TensorFlow's form); decoupled weight decay ``w -= lr * wd * w`` before each update (AdamW)."""
    w = w.astype(np.float64).copy()
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        rate = lr(t - 1) if callable(lr) else lr
        w -= rate * weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w -= rate * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    return w


def run_optimizer(opt, w0, grads):
    var = keras.Variable(w0)
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [var])
    return keras.ops.convert_to_numpy(var)


def _case(seed=0, steps=6, shape=(5, 7)):
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=shape).astype("float32")
    grads = [rng.normal(scale=s, size=shape).astype("float32") for s in np.geomspace(1e-3, 10, steps)]
    return w0, grads


@pytest.mark.parametrize("eps", [1e-7, 1e-8])
def test_fused_adam_matches_numpy_and_keras(eps):
    w0, grads = _case()
    want = numpy_adam(w0, grads, 1e-2, eps=eps)
    fused = run_optimizer(FusedAdam(1e-2, epsilon=eps), w0, grads)
    plain = run_optimizer(keras.optimizers.Adam(1e-2, epsilon=eps), w0, grads)
    np.testing.assert_allclose(fused, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)
    assert np.abs(fused - w0).max() > 1e-2  # it moved


def test_fused_adamw_matches_numpy_with_a_schedule():
    w0, grads = _case(1)
    schedule = keras.optimizers.schedules.ExponentialDecay(3e-2, decay_steps=2, decay_rate=0.5)
    want = numpy_adam(w0, grads, lambda step: 3e-2 * 0.5 ** (step / 2), eps=1e-8, weight_decay=0.1)
    got = run_optimizer(FusedAdamW(schedule, weight_decay=0.1, epsilon=1e-8), w0, grads)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["zeros", "huge", "tiny"])
def test_degenerate_gradients_stay_finite(kind):
    w0 = np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4)
    # "huge": 1e18 squared is 1e36, still a float32 (Keras's Adam and this one both overflow beyond 1.8e19)
    g = {"zeros": np.zeros_like(w0), "huge": np.full_like(w0, 1e18), "tiny": np.full_like(w0, 1e-30)}[kind]
    got = run_optimizer(FusedAdam(1e-3), w0, [g] * 3)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, numpy_adam(w0, [g.astype(np.float64)] * 3, 1e-3), rtol=1e-5, atol=1e-7)
    if kind == "zeros":
        np.testing.assert_array_equal(got, w0)


def test_amsgrad_and_sparse_gradients_take_keras_update():
    w0, grads = _case(2)
    np.testing.assert_allclose(run_optimizer(FusedAdam(1e-2, amsgrad=True), w0, grads),
                               run_optimizer(keras.optimizers.Adam(1e-2, amsgrad=True), w0, grads), rtol=1e-6)
    # an embedding's gradient arrives as IndexedSlices: only the looked-up rows move
    outs = []
    for opt in (FusedAdam(1e-1), keras.optimizers.Adam(1e-1)):
        keras.utils.set_random_seed(0)
        table = keras.layers.Embedding(10, 3)
        table.build((None,))
        opt.build(table.trainable_variables)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(table(tf.constant([1, 4])) ** 2)
        grad = tape.gradient(loss, table.trainable_variables)
        assert isinstance(grad[0], tf.IndexedSlices)
        before = keras.ops.convert_to_numpy(table.embeddings)
        opt.apply(grad, table.trainable_variables)
        outs.append(keras.ops.convert_to_numpy(table.embeddings))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6)
    moved = np.abs(outs[0] - before).max(axis=1) > 0
    assert moved.tolist() == [i in (1, 4) for i in range(10)]


def _update_ops(opt, n_vars=20) -> int:
    variables = [keras.Variable(np.ones((4, 4), "float32")) for _ in range(n_vars)]
    opt.build(variables)
    grads = [tf.ones((4, 4)) for _ in variables]
    return len(tf.function(lambda: opt.apply(grads, variables)).get_concrete_function().graph.get_operations())


def test_the_traced_update_is_five_times_smaller():
    fused, plain = _update_ops(FusedAdam(1e-3)), _update_ops(keras.optimizers.Adam(1e-3))
    assert fused * 5 < plain, (fused, plain)  # VarGFaceNet's verifier: 13,536 Adam operations with Keras's


X = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(16, 3)).astype("float32")


def _small_model(opt):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(opt, "mse")
    return model


def _same_state_then_same_step(a, b, rtol, atol):
    """Equal optimizer variables, then one more epoch of each gives the same weights."""
    for va, vb in zip(a.optimizer.variables, b.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(va), keras.ops.convert_to_numpy(vb))
    a.fit(X, Y, verbose=0, epochs=1)
    b.fit(X, Y, verbose=0, epochs=1)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wb, wa, rtol=rtol, atol=atol)


def test_config_round_trip_and_saved_model_resumes(tmp_path):
    opt = FusedAdamW(2e-3, weight_decay=0.05, beta_2=0.99, epsilon=1e-8)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is FusedAdamW and again.get_config() == opt.get_config()
    model = _small_model(FusedAdam(1e-2))
    model.fit(X, Y, verbose=0, epochs=2)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # safe_mode=True, no custom_objects
    assert type(loaded.optimizer) is FusedAdam
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    _same_state_then_same_step(model, loaded, rtol=1e-6, atol=1e-7)


def test_trainers_build_the_fused_optimizers():
    from kerasface.presets import get_pair_preset
    from kerasface.training import build_verifier
    from kerasface.training.optim import make_optimizer

    assert type(make_optimizer("adam")) is FusedAdam and type(make_optimizer("adamw")) is FusedAdamW
    cfg = get_pair_preset("vargface").override(backbone="vargfacenet_tiny", image_size=32)
    assert type(build_verifier(cfg).optimizer) is FusedAdam


MIRRORED = r"""
import json, sys
import tensorflow as tf
mode, out = sys.argv[1], sys.argv[2]
if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
else:
    strategy = tf.distribute.get_strategy()
import keras, numpy as np
from kerasface.optimizers import FusedAdamW
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)).astype("float32"); y = (x[:, 0] + x[:, 1] > 0).astype("int32")
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(FusedAdamW(1e-2, weight_decay=0.01), "sparse_categorical_crossentropy")
h = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=3, verbose=0)
json.dump({"loss": h.history["loss"], "w": [w.tolist() for w in model.get_weights()],
           "replicas": strategy.num_replicas_in_sync}, open(out, "w"))
"""


def test_mirrored_strategy_matches_one_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    got = {}
    for mode in ("default", "mirrored"):
        r = subprocess.run([sys.executable, str(script), mode, str(tmp_path / f"{mode}.json")], env=env,
                           capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        got[mode] = json.loads((tmp_path / f"{mode}.json").read_text())
    assert got["default"]["replicas"] == 1 and got["mirrored"]["replicas"] == 2
    assert got["default"]["loss"][-1] < got["default"]["loss"][0]
    np.testing.assert_allclose(got["mirrored"]["loss"], got["default"]["loss"], rtol=1e-5)
    for a, b in zip(got["default"]["w"], got["mirrored"]["w"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-6)


def test_a_backup_written_with_keras_adam_resumes_with_fused_adam(tmp_path):
    """Run backups hold the optimizer under the model's ``optimizer`` attribute, not its class name, so a
    backup from before FusedAdam restores its moments and step count (and the next step is Keras's)."""
    old = _small_model(keras.optimizers.Adam(1e-2))
    old.fit(X, Y, verbose=0, epochs=2)
    old.save_weights(tmp_path / "backup.weights.h5")
    new = _small_model(FusedAdam(1e-2))
    new.optimizer.build(new.trainable_variables)
    new.load_weights(tmp_path / "backup.weights.h5")
    assert int(new.optimizer.iterations) == 2
    _same_state_then_same_step(old, new, rtol=1e-5, atol=1e-6)


def test_other_backends_run_keras_update(tmp_path):
    """Under another Keras backend FusedAdam is Keras's Adam (no TensorFlow kernel); torch is optional here."""
    pytest.importorskip("torch")
    script = tmp_path / "torch_backend.py"
    script.write_text(
        "import json, sys, numpy as np, keras\n"
        "from kerasface.optimizers import FusedAdam\n"
        "rng = np.random.default_rng(0)\n"
        "w0 = rng.normal(size=(5, 7)).astype('float32')\n"
        "grads = [rng.normal(size=(5, 7)).astype('float32') for _ in range(4)]\n"
        "v = keras.Variable(w0); opt = FusedAdam(1e-2)\n"
        "[opt.apply([keras.ops.convert_to_tensor(g)], [v]) for g in grads]\n"
        "json.dump({'backend': keras.backend.backend(), 'w0': w0.tolist(), 'grads': [g.tolist() for g in grads],\n"
        "           'w': keras.ops.convert_to_numpy(v).tolist()}, open(sys.argv[1], 'w'))\n")
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "out.json")], env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["backend"] == "torch"
    want = numpy_adam(np.array(out["w0"]), [np.array(g) for g in out["grads"]], 1e-2)
    np.testing.assert_allclose(np.array(out["w"]), want, rtol=1e-5, atol=1e-6)
