"""kerasface.training.distribute: Runtime options, TF_CONFIG checks, and real distributed runs.

The distributed runs happen in subprocesses (a MirroredStrategy over two logical CPU devices needs
them configured before TensorFlow starts; a MultiWorkerMirroredStrategy needs one process per
worker). They train the same small classifier on the same fixed data with the same global batch
and compare the per-step loss trajectory and the final weights with a one-device run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasface.training import distribute
from kerasface.training.distribute import Runtime, read_tf_config

REPO = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
mode, out = sys.argv[1], sys.argv[2]
import tensorflow as tf
if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerasface.training.distribute import Runtime
rt = Runtime(strategy=mode)
rt.make_strategy()  # multiworker: before TensorFlow runs anything
import numpy as np, keras
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
y = (x[:, :8, :8, 0].mean(axis=(1, 2)) > 0).astype("int32") + 2 * (x[:, 8:, 8:, 1].mean(axis=(1, 2)) > 0)
ds = rt.shard(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), source="generator")  # global batch 16
losses = []
class Steps(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        losses.append(float(logs["loss"]))
with rt.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    init = [w.copy() for w in model.get_weights()]
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy", **rt.compile_kwargs())
model.fit(ds, epochs=4, verbose=0, shuffle=False, callbacks=[Steps()])
np.savez(out + ".npz", *model.get_weights())
np.savez(out + "-init.npz", *init)
with open(out + ".json", "w") as f:
    json.dump({"replicas": rt.num_replicas, "chief": rt.is_chief, "losses": losses,
               "devices": list(rt.make_strategy().extended.worker_devices) if mode != "default" else []}, f)
"""


def _run(script: Path, mode: str, out: Path, env=None, timeout=240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, str(script), mode, str(out)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _weights(path: Path) -> list[np.ndarray]:
    z = np.load(path)
    return [z[f"arr_{i}"] for i in range(len(z.files))]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    script = d / "worker.py"
    script.write_text(WORKER)
    r = _run(script, "default", d / "default")
    assert r.returncode == 0, r.stderr[-3000:]
    return script, d, json.loads((d / "default.json").read_text())


# --- options and TF_CONFIG ---------------------------------------------------------------------


def test_runtime_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown strategy 'horovod'"):
        Runtime(strategy="horovod")
    with pytest.raises(ValueError, match="unknown mixed precision 'fp8'"):
        Runtime(mixed_precision="fp8")


@pytest.mark.parametrize("value, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', '"task"'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "out of range"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "not in the cluster"),
])
def test_multiworker_needs_a_valid_tf_config(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match=message):
        Runtime(strategy="multiworker")


def test_chief_rank_and_worker_count_follow_tf_config(monkeypatch):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}
    seen = []
    for index in range(3):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        rt = Runtime(strategy="multiworker")
        seen.append((rt.is_chief, rt.worker_index, rt.num_workers))
    assert seen == [(True, 0, 3), (False, 1, 3), (False, 2, 3)]
    # with an explicit chief task, worker 0 is not the chief
    both = {"chief": ["127.0.0.1:9"], **cluster}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": both, "task": {"type": "worker", "index": 0}}))
    rt = Runtime(strategy="multiworker")
    assert (rt.is_chief, rt.worker_index, rt.num_workers) == (False, 1, 4)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": both, "task": {"type": "chief", "index": 0}}))
    assert Runtime(strategy="multiworker").is_chief
    assert read_tf_config()["task"]["type"] == "chief"
    assert Runtime().is_chief and Runtime(strategy="mirrored").is_chief


def test_shard_sets_the_auto_shard_policy_only_for_multiworker(monkeypatch):
    import tensorflow as tf

    ds = tf.data.Dataset.range(8)
    policy = tf.data.experimental.AutoShardPolicy
    assert Runtime().shard(ds, source="generator") is ds
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    rt = Runtime(strategy="multiworker")
    got = {s: rt.shard(ds, source=s).options().experimental_distribute.auto_shard_policy
           for s in ("generator", "files", "auto")}
    assert got == {"generator": policy.DATA, "files": policy.FILE, "auto": policy.AUTO}
    with pytest.raises(ValueError, match="source must be one of"):
        rt.shard(ds, source="rows")


def test_precision_policies(monkeypatch):
    import keras

    monkeypatch.setattr(distribute, "_has_gpu", lambda: False)
    monkeypatch.setattr(distribute, "cpu_supports_bf16", lambda: True)
    assert Runtime(mixed_precision="auto").policy_name() == "mixed_bfloat16"
    monkeypatch.setattr(distribute, "cpu_supports_bf16", lambda: False)
    assert Runtime(mixed_precision="auto").policy_name() == "float32"
    monkeypatch.setattr(distribute, "_has_gpu", lambda: True)
    assert Runtime(mixed_precision="auto").policy_name() == "mixed_float16"
    assert Runtime(mixed_precision="bfloat16").policy_name() == "mixed_bfloat16"
    assert Runtime().policy_name() == "float32"
    before = keras.mixed_precision.global_policy().name
    with Runtime(mixed_precision="bfloat16").precision() as name:
        assert name == "mixed_bfloat16" == keras.mixed_precision.global_policy().name
    assert keras.mixed_precision.global_policy().name == before


def test_runtime_settings_round_trip():
    """The runtime as the CLI builds it from --strategy / --mixed-precision / --jit-compile (kerasface.cli)."""
    assert Runtime() == Runtime("default", "off", False)
    rt = Runtime(strategy="mirrored", mixed_precision="bfloat16", jit_compile=True)
    assert rt == Runtime("mirrored", "bfloat16", True)
    assert rt.compile_kwargs() == {"jit_compile": True} and Runtime().compile_kwargs() == {"jit_compile": "auto"}
    with pytest.raises(ValueError, match="unknown strategy 'tpu'"):
        Runtime(strategy="tpu")


def test_cpu_bf16_flag_matches_proc_cpuinfo():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    assert distribute.cpu_supports_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


# --- real distributed runs ---------------------------------------------------------------------


def test_mirrored_over_two_logical_cpus_matches_one_device(default_run):
    script, d, ref = default_run
    r = _run(script, "mirrored", d / "mirrored")
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((d / "mirrored.json").read_text())
    assert ref["replicas"] == 1 and got["replicas"] == 2
    assert len(got["devices"]) == 2, got["devices"]  # one replica on each logical CPU device
    assert len(got["losses"]) == len(ref["losses"]) == 16  # 4 epochs x 4 global batches
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-5, atol=1e-6)
    # the run learned (the comparison is not between two untouched models)
    assert np.mean(ref["losses"][-4:]) < np.mean(ref["losses"][:4]) - 0.05
    init, w_ref, w_got = _weights(d / "default-init.npz"), _weights(d / "default.npz"), _weights(d / "mirrored.npz")
    assert max(float(np.abs(a - b).max()) for a, b in zip(init, w_ref)) > 1e-2
    for a, b in zip(w_ref, w_got):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_multiworker_two_local_processes_agree(default_run):
    script, d, ref = default_run
    try:
        ports = _free_ports(2)
    except OSError as e:
        pytest.skip(f"the sandbox forbids binding local ports on 127.0.0.1: {e}")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = []
    for i in range(2):
        e = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, str(script), "multiworker", str(d / f"worker{i}")], env=e,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    w0, w1 = (json.loads((d / f"worker{i}.json").read_text()) for i in range(2))
    assert (w0["chief"], w1["chief"]) == (True, False)
    assert w0["replicas"] == w1["replicas"] == 2
    # both workers hold the same final weights...
    for a, b in zip(_weights(d / "worker0.npz"), _weights(d / "worker1.npz")):
        np.testing.assert_array_equal(a, b)
    # ...which are the one-device run's: each worker took half of every global batch (DATA sharding)
    for a, b in zip(_weights(d / "default.npz"), _weights(d / "worker0.npz")):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w0["losses"], ref["losses"], rtol=1e-5, atol=1e-6)


# --- run folder: the recorded runtime is not compared on resume; only the chief writes ----------


def test_recorded_runtime_is_ignored_on_resume_but_settings_are_not(tmp_path):
    from kerasface.io import write_json
    from kerasface.training.distribute import resume_epochs, settings_for_resume
    from kerasface.training.run_folder import resume_point

    resolved = {"name": "vargface", "epochs": 3, "batch_size": 32}
    write_json(tmp_path / "config.json", resolved | {"runtime": Runtime("mirrored", "bfloat16").describe()})
    write_json(tmp_path / "history.json", {"loss": [1.0]})  # a finished epoch: a run to protect, not a failed start
    # resumed on other hardware (default strategy, float32): accepted
    assert resume_point(tmp_path, settings_for_resume(tmp_path, resolved)) == 0
    assert resume_epochs(Runtime(), tmp_path, resolved) == 0  # what the trainers call
    with pytest.raises(ValueError, match="batch_size: 32 -> 64"):
        resume_point(tmp_path, settings_for_resume(tmp_path, resolved | {"batch_size": 64}))
    with pytest.raises(ValueError, match="batch_size: 32 -> 64"):
        resume_epochs(Runtime(), tmp_path, resolved | {"batch_size": 64})
    assert settings_for_resume(tmp_path / "new", resolved) == resolved  # a new folder: nothing recorded


def test_only_the_chief_writes_the_run_folder(monkeypatch, tmp_path):
    from kerasface.training.distribute import worker_run_dir

    assert worker_run_dir(Runtime(), tmp_path / "run") == (tmp_path / "run", None)
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert worker_run_dir(Runtime(strategy="multiworker"), tmp_path / "run") == (tmp_path / "run", None)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    where, scratch = worker_run_dir(Runtime(strategy="multiworker"), tmp_path / "run")
    try:
        assert scratch is not None and scratch.is_dir() and where.parent == scratch
        assert tmp_path not in where.parents and "worker1" in scratch.name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- a real trainer under MultiWorkerMirroredStrategy: killed, resumed, refused ----------------

_TRIPLET_WORKER = """
import sys
import keras
from kerasface.models import registry

def micro(input_shape=(32, 32, 3), embedding_dim=16, **_):  # quick to trace; Keras built-ins only
    x = keras.Input(input_shape, name="image")
    y = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(embedding_dim)(y), name="micro")

registry.BACKBONES["micro"] = micro
from kerasface.cli import main
sys.exit(main(sys.argv[1:]))
"""
MW_EPOCHS = 12


def _launch_workers(script, tmp_path, tag, run_dirs):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    for i, run_dir in enumerate(run_dirs):
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        cmd = [sys.executable, str(script), "train-triplet", "--backbone", "micro", "--image-size", "32",
               "--embedding-dim", "16", "--mining", "semi_hard", "--batch-size", "32", "--epochs", str(MW_EPOCHS),
               "--center-crop", "0.6", "--verify-every", "0", "--seed", "0", "--run-dir", str(run_dir),
               "--strategy", "multiworker", "--quiet"]
        log = tmp_path / f"{tag}-worker{i}.log"
        logs.append(log)
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT))
    return procs, logs


def _finish(procs, timeout=300):
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs]


def test_multiworker_train_triplet_is_killed_and_resumes_on_every_worker(tmp_path):
    """Two local workers train ``train-triplet`` (a micro backbone) and are SIGKILLed after the chief's first
    backup. A worker pointed at another (empty) run folder is then refused by both workers (instead of a
    hang); the same command on both resumes (worker 1 from a copy of the chief's folder) and ends with
    every epoch once in the history."""
    import glob
    import signal
    import tempfile
    import time

    from kerasface.training.callbacks import RunBackup

    try:
        _free_ports(2)
    except OSError as e:
        pytest.skip(f"the sandbox forbids binding local ports on 127.0.0.1: {e}")
    script = tmp_path / "worker.py"
    script.write_text(_TRIPLET_WORKER)
    run_dir = tmp_path / "run"
    procs, logs = _launch_workers(script, tmp_path, "first", [run_dir, run_dir])
    state = run_dir / "backup" / RunBackup.STATE
    deadline = time.monotonic() + 300
    while not state.exists() and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    _finish(procs)
    assert state.exists(), "no epoch finished: " + logs[0].read_text()[-3000:] + logs[1].read_text()[-3000:]
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < MW_EPOCHS
    assert json.loads((run_dir / "metrics.json").read_text())["complete"] is False

    # worker 1 sees another run folder (as without a shared file system): both refuse, naming each one's epoch
    procs, logs = _launch_workers(script, tmp_path, "mismatch", [run_dir, tmp_path / "elsewhere"])
    codes = _finish(procs)
    for code, log in zip(codes, logs):
        text = log.read_text()
        assert code != 0 and "the workers disagree on the epochs already done" in text, text[-3000:]
        assert f"worker 0: {killed_at}, worker 1: 0" in text

    scratch = set(glob.glob(str(Path(tempfile.gettempdir()) / "kerasface-worker1-*")))
    procs, logs = _launch_workers(script, tmp_path, "resume", [run_dir, run_dir])
    codes = _finish(procs)
    out = [log.read_text() for log in logs]
    assert codes == [0, 0], out[0][-3000:] + out[1][-3000:]
    assert f"resuming {run_dir} after {killed_at} finished epoch(s)" in out[0]
    assert f"after {killed_at} finished epoch(s)" in out[1] and "resuming from a copy of" in out[1]
    history = json.loads((run_dir / "history.json").read_text())
    assert all(len(col) == MW_EPOCHS for col in history.values()), {k: len(v) for k, v in history.items()}
    assert json.loads((run_dir / "metrics.json").read_text())["complete"] is True
    assert json.loads((run_dir / "config.json").read_text())["runtime"]["strategy"] == "multiworker"
    assert set(glob.glob(str(Path(tempfile.gettempdir()) / "kerasface-worker1-*"))) <= scratch  # cleaned up
