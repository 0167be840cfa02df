"""Hardware runtime of a training run: distribution strategy, mixed precision, XLA.

One frozen :class:`Runtime` says *how* a run executes, never *what* it
learns, so it is not a preset field: a run may resume on other hardware. The
run folder's ``config.json`` may record it under a separate ``"runtime"`` key,
which resuming does not compare.

Typical use (what :func:`kerasface.training.runner.run_training` does)::

    rt = Runtime(strategy="mirrored", mixed_precision="auto")
    rt.apply_precision()                 # before any layer is built
    with rt.scope():                     # the model and its optimizer live on the strategy
        model = build(...)
        model.compile(optimizer, loss, **rt.compile_kwargs())
    model.fit(rt.shard(dataset), ...)    # the dataset's batch is the *global* batch
    if rt.is_chief: write the run folder

Strategies (``docs/distributed.md``):

* ``default``: TensorFlow's default strategy (one device);
* ``mirrored``: :class:`tf.distribute.MirroredStrategy` over every GPU, or,
  without GPUs, over every logical CPU device when there are several (tests
  split the CPU in two with ``tf.config.set_logical_device_configuration``);
* ``multiworker``: :class:`tf.distribute.MultiWorkerMirroredStrategy`, its
  cluster and this process's task read from the ``TF_CONFIG`` environment
  variable (checked here, with a clear error when missing or malformed).

Mixed precision: ``off`` (float32), ``bfloat16`` (``mixed_bfloat16``),
``float16`` (``mixed_float16``; Keras wraps the optimizer in a
``LossScaleOptimizer`` at ``compile``), ``auto``: ``float16`` with a GPU,
``bfloat16`` when the CPU has AVX512-BF16 or AMX-BF16 (``/proc/cpuinfo``),
otherwise off. Models keep their embedding and logit outputs float32 (their
last layers are float32), so losses and metrics are computed in float32.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache

from kerasface.training.keras_patches import patch_keras_for_multiworker
from kerasface.training.run_folder import resume_point

__all__ = ["Runtime", "STRATEGIES", "PRECISIONS", "cpu_supports_bf16", "read_tf_config", "settings_for_resume",
           "worker_run", "worker_run_dir"]

logger = logging.getLogger("kerasface.training")

STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("off", "auto", "bfloat16", "float16")
_POLICY = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

# One strategy object per process and kind: TensorFlow allows a single
# MultiWorkerMirroredStrategy per process, and building one is not free.
_STRATEGY_CACHE: dict = {}


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16`` (fast bfloat16 matmuls on the CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def read_tf_config(environ=None) -> dict:
    """``TF_CONFIG`` parsed and checked: ``{"cluster": {"worker": [...], ...}, "task": {"type", "index"}}``."""
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not raw:
        raise ValueError(f"--strategy multiworker needs the TF_CONFIG environment variable; {example} "
                         "(docs/distributed.md)")
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}); {example}") from None
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG has no \"cluster\" mapping of task types to host:port lists; {example}")
    for kind, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and ":" in h for h in hosts):
            raise ValueError(f"TF_CONFIG cluster[{kind!r}] must be a non-empty list of 'host:port' strings, "
                             f"got {hosts!r}")
    if not {"worker", "chief"} & set(cluster):
        raise ValueError(f"TF_CONFIG cluster needs a \"worker\" (or \"chief\") list, got {sorted(cluster)}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG needs \"task\": {{\"type\": ..., \"index\": ...}} naming this process; {example}")
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        raise ValueError(f"TF_CONFIG task type {kind!r} is not in the cluster ({sorted(cluster)})")
    if not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(f"TF_CONFIG task index {index!r} out of range for {len(cluster[kind])} {kind!r} task(s)")
    return cfg


@dataclass(frozen=True)
class Runtime:
    """How a run executes: ``strategy`` (default|mirrored|multiworker), ``mixed_precision``
    (off|auto|bfloat16|float16) and ``jit_compile`` (XLA)."""

    strategy: str = "default"
    mixed_precision: str = "off"
    jit_compile: bool = False

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"unknown mixed precision {self.mixed_precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.strategy == "multiworker":
            read_tf_config()  # fail at once, before any data is read

    # ------------------------------------------------------------------ strategy
    def make_strategy(self):
        """The ``tf.distribute.Strategy`` (built once per process and kind, then cached)."""
        import tensorflow as tf

        if self.strategy == "default":
            return tf.distribute.get_strategy()
        if self.strategy in _STRATEGY_CACHE:
            return _STRATEGY_CACHE[self.strategy]
        if self.strategy == "mirrored":
            gpus = tf.config.list_logical_devices("GPU")
            cpus = tf.config.list_logical_devices("CPU")
            devices = [d.name for d in gpus] or ([d.name for d in cpus] if len(cpus) > 1 else None)
            strategy = tf.distribute.MirroredStrategy(devices=devices)
        else:
            read_tf_config()
            # RING collectives work on CPUs and GPUs alike (NCCL is GPU-only).
            options = tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
            patch_keras_for_multiworker()  # tensorflow/tensorflow#72388
            try:
                strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
            except RuntimeError as e:
                if "startup" not in str(e):
                    raise
                raise RuntimeError("--strategy multiworker: the strategy must be created before TensorFlow runs "
                                   "anything in this process; call Runtime.make_strategy() first") from e
        logger.info("strategy %s: %d replica(s) in sync", self.strategy, strategy.num_replicas_in_sync)
        _STRATEGY_CACHE[self.strategy] = strategy
        return strategy

    def scope(self):
        """``strategy.scope()``: build and compile the model inside it."""
        return self.make_strategy().scope()

    @property
    def num_replicas(self) -> int:
        """Replicas that split each global batch (devices x workers)."""
        return int(self.make_strategy().num_replicas_in_sync)

    @property
    def num_workers(self) -> int:
        if self.strategy != "multiworker":
            return 1
        cluster = read_tf_config()["cluster"]
        return len(cluster.get("worker", [])) + len(cluster.get("chief", []))

    @property
    def worker_index(self) -> int:
        """This worker's rank, 0 (the chief) .. num_workers - 1."""
        if self.strategy != "multiworker":
            return 0
        cfg = read_tf_config()
        task, cluster = cfg["task"], cfg["cluster"]
        if task["type"] == "chief":
            return 0
        return task["index"] + (1 if "chief" in cluster else 0)

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run folder: always, except on non-chief workers of a multiworker run
        (the chief is the ``"chief"`` task, else worker 0)."""
        if self.strategy != "multiworker":
            return True
        cfg = read_tf_config()
        task, cluster = cfg["task"], cfg["cluster"]
        if "chief" in cluster:
            return task["type"] == "chief"
        return task["type"] == "worker" and task["index"] == 0

    def agree(self, what: str, value: int) -> int:
        """``value`` when every worker of a multiworker run holds the same one; otherwise a ``ValueError`` on
        every worker, naming each worker's value (instead of a hang when the workers would run different step
        counts). Other strategies: ``value``. Costs one all-reduce."""
        if self.strategy != "multiworker":
            return value
        import numpy as np
        import tensorflow as tf

        strategy = self.make_strategy()
        n, me = self.num_workers, self.worker_index
        local = max(strategy.num_replicas_in_sync // n, 1)
        slot = np.zeros(n, np.float32)
        slot[me] = value
        per_replica = strategy.run(lambda: tf.constant(slot))
        values = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy() / local
        if not np.all(values == values[0]):
            seen = ", ".join(f"worker {i}: {int(round(v))}" for i, v in enumerate(values))
            raise ValueError(f"the workers disagree on {what} ({seen}). A multiworker run resumes only from a run "
                             f"folder every worker sees (--run-dir on a shared file system, the same path on each "
                             f"machine); give every worker the same --run-dir, or start a new one")
        return value

    def shard(self, dataset, source: str = "auto"):
        """Set the dataset's auto-shard policy for a multiworker run (other strategies: unchanged).

        ``source="files"``: each worker reads its own files (``FILE``; e.g.
        TFRecord shards from :func:`kerasface.data.tfrecord.read_shards`,
        which need at least as many files as workers);
        ``"generator"``: a ``from_generator`` / in-memory dataset has no files
        to split, so every worker runs the same seeded pipeline and keeps every
        N-th element (``DATA``): the workers see disjoint batches in the same
        order, at the cost of each one producing (and discarding) the others'
        elements; ``"auto"``: TensorFlow's ``AUTO`` (``FILE`` when it finds a
        file reader, else ``DATA``).

        The dataset must yield *global* batches (per-replica batch x
        :attr:`num_replicas`): ``tf.distribute`` splits every global batch
        between the workers (with ``DATA`` each keeps its part of each batch),
        so all workers run the same number of steps and the gradients average
        over the whole global batch (``tests/training/test_distribute.py``: the
        same weights as one device).
        """
        if self.strategy != "multiworker":
            return dataset
        import tensorflow as tf

        policies = {"auto": tf.data.experimental.AutoShardPolicy.AUTO,
                    "files": tf.data.experimental.AutoShardPolicy.FILE,
                    "generator": tf.data.experimental.AutoShardPolicy.DATA,
                    "data": tf.data.experimental.AutoShardPolicy.DATA}
        if source not in policies:
            raise ValueError(f"source must be one of {', '.join(policies)}, got {source!r}")
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = policies[source]
        return dataset.with_options(options)

    # ------------------------------------------------------------------ precision
    def policy_name(self) -> str:
        """The Keras dtype policy this runtime asks for: ``float32``, ``mixed_bfloat16`` or ``mixed_float16``."""
        mode = self.mixed_precision
        if mode == "auto":
            mode = "float16" if _has_gpu() else ("bfloat16" if cpu_supports_bf16() else "off")
        if mode == "float16" and not _has_gpu():
            logger.warning("mixed_float16 without a GPU: the CPU computes float16 slowly; bfloat16 is the CPU's type")
        return _POLICY[mode]

    def apply_precision(self) -> str:
        """Set Keras's global dtype policy (call before building the model); returns its name.

        Use :meth:`precision` to restore the previous policy afterwards.
        """
        import keras

        name = self.policy_name()
        keras.mixed_precision.set_global_policy(name)
        return name

    @contextlib.contextmanager
    def precision(self):
        """Context manager: the policy of :meth:`apply_precision` inside, the previous global policy after."""
        import keras

        before = keras.mixed_precision.global_policy().name
        try:
            yield self.apply_precision()
        finally:
            keras.mixed_precision.set_global_policy(before)

    # ------------------------------------------------------------------ compile
    def compile_kwargs(self) -> dict:
        """Keyword arguments for ``model.compile``: ``{"jit_compile": True}`` with ``--jit-compile``, else
        ``{"jit_compile": "auto"}`` (Keras's default: no XLA on a CPU-only machine or under a tf.distribute
        strategy, XLA on one GPU when the model supports it)."""
        return {"jit_compile": True if self.jit_compile else "auto"}

    def describe(self) -> dict:
        """What the run folder's ``config.json`` records under ``"runtime"`` (not compared on resume)."""
        out = {"strategy": self.strategy, "mixed_precision": self.mixed_precision,
               "jit_compile": self.jit_compile, "policy": self.policy_name()}
        if self.strategy == "multiworker":
            out.update(num_workers=self.num_workers, worker_index=self.worker_index)
        return out


def settings_for_resume(run_dir, resolved: dict) -> dict:
    """``resolved`` plus the ``"runtime"`` entry the run folder's ``config.json`` already records (if any).

    The runtime is written to ``config.json`` but is no setting of the run:
    comparing this dict with the file (``resume_point``) ignores a change of
    hardware between a killed run and its resumption.
    """
    from pathlib import Path

    cfg_file = Path(run_dir) / "config.json"
    if not cfg_file.is_file():
        return dict(resolved)
    try:
        old = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError):
        return dict(resolved)
    if isinstance(old, dict) and "runtime" in old:
        if old["runtime"] is not None:
            logger.info("run folder %s was written with runtime %s", run_dir, old["runtime"])
        return dict(resolved, runtime=old["runtime"])
    return dict(resolved)


def resume_epochs(runtime: Runtime, run_dir, resolved: dict) -> int:
    """Epochs already done in ``run_dir`` by a run of the same settings (0 for a new folder; clear errors for
    other settings or a complete run), checked to be the same on every worker of a multiworker run."""
    done = resume_point(run_dir, settings_for_resume(run_dir, resolved))
    return runtime.agree("the epochs already done in the run folder", done)


def worker_run_dir(runtime: Runtime, run_dir):
    """Where this process writes its run folder: ``run_dir`` on the chief, a temporary folder on the other
    workers of a multiworker run (they train in lockstep and would write the same files; the caller deletes it).

    Resuming: when ``run_dir`` already holds a run (the chief's, seen through a shared file system), a
    non-chief worker starts from a copy of it, so it restores the same backup and history as the chief
    (the trainers then check with :meth:`Runtime.agree` that every worker resumes at the same epoch)."""
    if runtime.is_chief:
        return run_dir, None
    import shutil
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix=f"kerasface-worker{runtime.worker_index}-"))
    if run_dir is not None and (Path(run_dir) / "config.json").is_file():
        # what resuming reads (config, history, metrics, backup weights), not the saved models and plots
        shutil.copytree(run_dir, tmp / "run", ignore=shutil.ignore_patterns("*.keras", "*.png"))
        logger.info("worker %d: resuming from a copy of %s", runtime.worker_index, run_dir)
    return tmp / "run", tmp


@contextlib.contextmanager
def worker_run(runtime: Runtime, run_dir):
    """Start a training run on ``runtime``: create its strategy (a multiworker one must exist before
    TensorFlow runs anything) and yield the folder this process writes (:func:`worker_run_dir`); a
    non-chief worker's temporary folder is deleted afterwards."""
    import shutil

    runtime.make_strategy()
    run_dir, scratch = worker_run_dir(runtime, run_dir)
    try:
        yield run_dir
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
