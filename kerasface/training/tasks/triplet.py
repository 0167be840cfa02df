"""Train a triplet-loss face embedding (report 004, the FaceNet monograph) and write its run folder.

Data: an :class:`~kerasface.data.identities.IdentityIndex` of the training
identities (everyone except the people of the evaluation pairs, see
:func:`kerasface.data.splits.resolve_identity_split`), read in chunks (the
monograph's "trunks") by :class:`~kerasface.data.loaders.ChunkedLoader`. Per chunk:

* ``mining="offline"`` (the monograph): embed the chunk with the current
  model, select semi-hard triplets (:func:`kerasface.losses.select_triplets`),
  and fit the three-input :func:`~kerasface.models.TripletModel` on them with
  the stack loss (``hinge_squared`` by default);
* ``mining="batch_hard" | "semi_hard" | "batch_all"``: P x K batches of the
  chunk (:func:`~kerasface.data.pipelines.pk_batches`) into the embedding model
  compiled with that online mining loss.

The chunked epochs are the task's own loop (:class:`~kerasface.training.runner.EpochLoopTask`);
the runner records, backs up and resumes them like every other trainer's.

After every epoch a fixed probe set of training faces is embedded: the mean
pairwise distance (``probe_mean_distance``), the same/different means, the
fraction of the probe's triplets that still have a positive loss
(``probe_active_fraction``) and their mean loss (``probe_loss``) go to the
history, and so does the mean distance of the probe embedded as the training
step sees it (BN on batch statistics: ``probe_train_mean_distance``). That
one below ``collapse_floor`` stops the run: the embeddings collapsed to one
point, the report's failure (distances ~1e-7). (The inference-mode distances
are not used for the test: early in a short run they all sit close together
while the BN moving statistics lag behind, without any collapse.)
A NaN loss stops the run too; the last good epoch is then still evaluated.

Run folder: ``config.json``, ``data_report.json``, ``train_identities.txt``,
``eval_pairs.txt``, ``history.json`` / ``history.csv``, ``curves.png``,
``model.keras`` (the embedding model), ``triplet.keras`` (the three-input
graph), ``metrics.json`` (``"verification"`` on the evaluation pairs,
``"case_study"``), ``roc.png``, ``cases.png`` and ``case_study.png`` (the
hardest positive and negative pairs among the held-out faces).

Hardware: as every trainer (:mod:`kerasface.training.runner`); the ``from_generator`` batches are
DATA-sharded across the workers of a multiworker run (every worker loads the same seeded chunks).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasface.config import TripletExperiment
from kerasface.data.loaders import ChunkedLoader
from kerasface.data.locations import data_location
from kerasface.data.pipelines import embed_images
from kerasface.data.sources import open_image_source
from kerasface.data.splits import IdentitySplit, resolve_identity_split, write_pairs_list
from kerasface.evaluation.verification import evaluate_pairs, heldout_accuracy
from kerasface.io import atomic_path, write_json
from kerasface.layers import load_weights
from kerasface.training.distribute import Runtime
from kerasface.training.run_folder import RunResult
from kerasface.training.runner import EpochLoopTask, Stop, Verification, run_training
from kerasface.training.tasks.triplet_chunks import EpochTally, chunk_dataset, fit_verbosity
from kerasface.training.tasks.triplet_model import build_embedding_model, compile_triplet, prebuild_training_step
from kerasface.training.tasks.triplet_monitor import (
    collapse_message,
    embed_training_mode,
    eval_case_study,
    is_collapsed,
    pick_probe,
    plot_triplet_history,
    probe_case_study,
    probe_statistics,
)

logger = logging.getLogger("kerasface.training")

__all__ = ["TripletTask", "TripletRunResult", "build_embedding_model", "compile_triplet", "train_triplet"]

_SUBFOLDS = 10


# --------------------------------------------------------------------------- the task
@dataclass
class TripletRunResult(RunResult):
    triplet_model: keras.Model | None = None
    data: IdentitySplit | None = None


class TripletTask(EpochLoopTask):
    """Triplets mined offline per chunk or online in P x K batches; a probe watches for collapse."""

    embedding_metric = "l2"  # as its verification scores (face_spec.json)

    def __init__(self, cfg: TripletExperiment):
        self.cfg = cfg
        self.title = f"{cfg.name}: {cfg.backbone} {cfg.image_size}px, {cfg.mining} mining, margin {cfg.margin}"
        self.state = {"images_seen": 0, "collapse": None, "stopped": None}
        self.last_eval = None  # (epoch, scores) of the latest verification
        self.loader = None

    def settings(self) -> dict:
        cfg = self.cfg
        self.data_path = data_location(cfg.data)
        self.td = td = resolve_identity_split(cfg, self.data_path)
        return cfg.to_dict() | {"data": str(self.data_path), "eval_pairs_source": td.eval_source,
                                "folds_file": str(td.folds_file) if td.folds_file else None}

    def prepare(self, run_dir: Path, verbose, runtime: Runtime) -> None:
        cfg, td = self.cfg, self.td
        self.run_dir, self.runtime, self.fit_verbose = run_dir, runtime, fit_verbosity(verbose)
        self.say = (lambda *a: logger.info(*a)) if verbose else (lambda *a: logger.debug(*a))
        with atomic_path(run_dir / "train_identities.txt") as tmp:
            tmp.write_text("".join(f"{n}\n" for n in td.train.names))
        if td.eval_pairs and write_pairs_list(td.eval_pairs, run_dir / "eval_pairs.txt"):
            td.report["eval"]["list"] = "eval_pairs.txt"
        self.say("training identities: %d (%d images, >= %d each); evaluation: %d pairs from %s, their %d people "
                 "left out", td.train.num_identities, len(td.train), cfg.min_images, len(td.eval_pairs),
                 td.eval_source, len(td.excluded))
        self.source = open_image_source(self.data_path)
        self.score_kw = dict(metric="l2", image_size=cfg.image_size, center_crop=cfg.center_crop,
                             batch_size=max(cfg.batch_size, 32), verbose=0)
        self.P = cfg.batch_size // cfg.k_images
        write_json(run_dir / "data_report.json", td.report)

    def build(self, runtime: Runtime) -> keras.Model:
        self.embedder = build_embedding_model(self.cfg)
        fitted, self.triplet = compile_triplet(self.cfg, self.embedder, runtime)
        prebuild_training_step(fitted, self.cfg)
        self.models = {"model.keras": self.embedder, "triplet.keras": self.triplet}
        return fitted

    def begin(self, model: keras.Model) -> None:
        cfg, td = self.cfg, self.td
        self.loader = ChunkedLoader(td.train, chunk_size=cfg.chunk_size, images_per_identity=cfg.images_per_identity,
                                    mode=cfg.chunk_mode, image_size=cfg.image_size, center_crop=cfg.center_crop,
                                    seed=cfg.seed, prefetch=1, on_error="raise" if cfg.on_error == "error" else "skip")
        self.probe = self.loader.load(pick_probe(td.train, cfg.probe_size, cfg.seed))
        embedder = self.embedder
        if self.runtime.strategy == "default":
            self.embed_fn = embedder.predict_on_batch
        else:
            # Under a tf.distribute strategy Keras's predict_on_batch runs the whole batch on every replica and
            # concatenates the results (2 replicas: 2N rows for N images); a plain call reads the mirrored weights.
            infer = tf.function(lambda x: embedder(x, training=False))
            self.embed_fn = lambda x: infer(tf.convert_to_tensor(x)).numpy()

    def resumed(self, history: dict) -> None:
        # images seen in the epochs kept, from their history (metrics.json may be one epoch ahead)
        self.state["images_seen"] = int(3 * sum(history.get("triplets", [])) if self.cfg.mining == "offline"
                                        else sum(history.get("batches", [])) * self.P * self.cfg.k_images)

    # ------------------------------------------------------------------ one epoch
    def run_epoch(self, epoch: int, model: keras.Model) -> dict | Stop:
        tally = EpochTally()
        for chunk in self.loader.epoch(epoch):
            stop = self._train_chunk(epoch, chunk, model, tally)
            if stop is not None:
                return stop
        logs = tally.logs(self.cfg.mining == "offline")
        logs.update(self._probe_logs(epoch))
        return logs

    def _train_chunk(self, epoch: int, chunk, model: keras.Model, tally: EpochTally) -> Stop | None:
        cfg = self.cfg
        tc = time.perf_counter()
        sel0 = tally.selected
        ds, steps, weight = chunk_dataset(cfg, chunk, epoch, self.P, self.embed_fn, tally)
        self.state["images_seen"] += 3 * weight if cfg.mining == "offline" else steps * self.P * cfg.k_images
        t_fit0 = time.perf_counter()
        if steps == 0:
            return None
        # The known length gives Keras a progress-bar total (and no "ran out of data" warning).
        ds = self.runtime.shard(ds.apply(tf.data.experimental.assert_cardinality(steps)), source="generator")
        t_fit = time.perf_counter()
        h = model.fit(ds, epochs=1, verbose=self.fit_verbose, shuffle=False).history
        t_fit = time.perf_counter() - t_fit
        loss = h["loss"][0]
        if not math.isfinite(loss):  # stop now: the weights are NaN, this epoch is never recorded
            where = {"epoch": epoch + 1, "chunk": chunk.number + 1, "loss": loss}
            kept = f"; the run folder keeps the models of epoch {epoch}" if epoch else ""  # none in epoch 1
            self.state["stopped"] = (f"the training loss became {loss} at epoch {epoch + 1}, chunk "
                                     f"{chunk.number + 1}{kept}")
            logger.error(self.state["stopped"])
            return Stop("nan", where, self.state["stopped"])
        tally.loss_sum += loss * weight
        tally.loss_n += weight
        if "triplet_accuracy" in h:
            tally.acc_sum += h["triplet_accuracy"][0] * weight
        offline = cfg.mining == "offline"
        self.say("epoch %d/%d, chunk %d: %d images of %d identities, %s, loss %.4f (%.1f s%s)", epoch + 1,
                 cfg.epochs, chunk.number + 1, len(chunk), len(np.unique(chunk.labels)),
                 f"{weight} triplets (of {tally.selected - sel0} selected)" if offline else f"{weight} P x K batches",
                 loss, time.perf_counter() - tc,
                 f": embedding + selection {t_fit0 - tc:.1f} s, fit {t_fit:.1f} s" if offline else "")
        return None

    def _probe_logs(self, epoch: int) -> dict:
        """The probe's statistics, the collapse test's distance, and the verification when due (or collapsed)."""
        cfg, probe, td = self.cfg, self.probe, self.td
        ps = probe_statistics(embed_images(probe.images, self.embed_fn), probe.labels, cfg.margin, cfg.squared)
        logs = {f"probe_{k}": v for k, v in ps.items() if k != "triplets"}
        # The collapse test reads the geometry the loss sees (training-mode BN): early in a short run
        # the inference-mode embeddings all sit close together while the BN moving statistics lag.
        train_d = probe_statistics(embed_training_mode(self.embedder, probe.images), probe.labels, cfg.margin,
                                   cfg.squared)["mean_distance"]
        logs["probe_train_mean_distance"] = train_d
        due = td.eval_pairs and (epoch + 1 == cfg.epochs or
                                 (cfg.verify_every > 0 and (epoch + 1) % cfg.verify_every == 0))
        if due or (is_collapsed(train_d, cfg.collapse_floor) and td.eval_pairs):
            res = self._evaluate()
            self.last_eval = (epoch, res)
            m = res.metrics
            logs.update(verify_accuracy=m.get("heldout_accuracy_mean", math.nan),
                        verify_auc=math.nan if m["auc"] is None else m["auc"],
                        verify_eer=math.nan if m["eer_percent"] is None else m["eer_percent"])
        return logs

    def end_epoch(self, epoch: int, logs: dict, seconds: float) -> Stop | None:
        cfg = self.cfg
        train_d = logs["probe_train_mean_distance"]
        self.say("epoch %d/%d: loss %.4f, probe mean distance %.4f (same %.4f, different %.4f; training mode %.4f), "
                 "active probe triplets %.3f%s (%.1f s)", epoch + 1, cfg.epochs, logs["loss"],
                 logs["probe_mean_distance"], logs["probe_pos_distance"], logs["probe_neg_distance"], train_d,
                 logs["probe_active_fraction"],
                 f", held-out accuracy {logs['verify_accuracy']:.4f}, AUC {logs['verify_auc']:.4f}"
                 if "verify_auc" in logs else "", seconds)
        if not is_collapsed(train_d, cfg.collapse_floor):
            return None
        self.state["collapse"] = {"epoch": epoch + 1, "probe_train_mean_distance": train_d,
                                  "probe_mean_distance": logs["probe_mean_distance"], "floor": cfg.collapse_floor}
        self.state["stopped"] = collapse_message(train_d, cfg.collapse_floor, epoch + 1, len(self.probe))
        logger.error(self.state["stopped"])
        return Stop("collapse", self.state["collapse"], self.state["stopped"])

    def _evaluate(self):
        res = evaluate_pairs(self.embedder, self.source, self.td.eval_pairs, **self.score_kw)
        res.metrics.update(heldout_accuracy(res.scores, _SUBFOLDS))
        return res

    # ------------------------------------------------------------------ the end
    def plot(self, history: dict, path) -> None:
        plot_triplet_history(history, path, title=self.title, floor=self.cfg.collapse_floor)

    def stop_fields(self, stop: Stop) -> dict:
        return {"stopped": stop.message, "nan": stop.where}

    def recover_from_nan(self, run) -> bool:
        # Evaluate (and report) the last good epoch's saved weights, not the NaN ones in memory.
        load_weights(self.embedder, run.run_dir / "model.keras")
        return True

    def verification(self) -> Verification:
        td = self.td
        return Verification(self.source, td.eval_pairs, title=f"{self.cfg.name}: held-out pairs ({td.eval_source})",
                            model=self.embedder)

    def final_scores(self, model: keras.Model, spec: Verification, run):
        # the verification of the last epoch run, when it had one
        last = len(run.writer.epoch_seconds) - 1
        self.final = self.last_eval[1] if self.last_eval and self.last_eval[0] == last else self._evaluate()
        return self.final

    def summary(self, h: dict, epoch_seconds: list, complete: bool) -> dict:
        cfg, td, state = self.cfg, self.td, self.state
        later = epoch_seconds[1:] or epoch_seconds
        return {
            "preset": cfg.name,
            "complete": complete,
            "epochs_run": len(epoch_seconds),
            "epochs_planned": cfg.epochs,
            "mining": cfg.mining,
            "loss": cfg.loss if cfg.mining == "offline"
            else f"{cfg.mining} ({'squared' if cfg.squared else 'plain'} distances)",
            "margin": cfg.margin,
            "final": {k: v[-1] for k, v in h.items()},
            "first": {k: v[0] for k, v in h.items()},
            "train_identities": td.train.num_identities,
            "train_images": len(td.train),
            "eval_pairs": len(td.eval_pairs),
            "probe_images": len(self.probe),
            "epoch_seconds": epoch_seconds,
            # Later epochs exclude the first one's graph tracing.
            "seconds_per_epoch": sum(later) / len(later),
            "images_seen": state["images_seen"],
            "collapse": state["collapse"],
            "stopped": state["stopped"],
            "loader": self.loader.stats,
        }

    def report(self, metrics: dict, model: keras.Model, run) -> dict:
        if self.td.eval_pairs:
            metrics["case_study"] = eval_case_study(self.embedder, self.source, self.td, self.cfg, self.final,
                                                    run.run_dir, self.score_kw)
        else:
            metrics["case_study"] = probe_case_study(self.probe, self.td.train, self.embed_fn, self.cfg, run.run_dir)
        return metrics

    def result(self, run_dir: Path, metrics: dict, model: keras.Model) -> TripletRunResult:
        return TripletRunResult(run_dir=run_dir, metrics=metrics, model=self.embedder, triplet_model=self.triplet,
                                data=self.td)

    def close(self) -> None:
        if self.loader is not None:
            self.loader.close()


def train_triplet(cfg: TripletExperiment, run_dir: Path | None = None, verbose="auto",
                  runtime: Runtime | None = None, run_name: str | None = None) -> TripletRunResult:
    """Train ``cfg`` end to end and write the run folder; returns it with the metrics and both models.

    ``verbose``: 0 silent; 2 one log line per chunk and per epoch; 1 / "auto"
    also Keras progress bars (on a terminal). ``runtime``: strategy, mixed
    precision, XLA (default: one device, float32). ``run_name``: the new run
    folder's name before its time stamp (default ``cfg.name``).
    """
    return run_training(TripletTask(cfg), run_dir, verbose, runtime, run_name)
