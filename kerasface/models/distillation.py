"""Distillation model: a student backbone + classifier, every loss term once, an optional frozen teacher.

The training model of report 002 (its presets live in :mod:`kerasface.presets`).
:class:`DistillationModel` wraps

* ``backbone``: images -> embedding (the "pre-logits"; e.g.
  :func:`kerasface.models.sqnxt23v5_w1`, :func:`kerasface.models.inception_resnet_v1`);
* ``classifier``: ``Dense(num_classes)`` (with bias by default, as in the
  report), float32 logits;
* optionally a frozen ``teacher``: a model ``images -> [embedding, logits]``,
  or another :class:`DistillationModel` (its ``backbone`` and ``classifier`` are
  used; its own teacher is ignored). It is set ``trainable = False``, called
  with ``training=False`` (BN statistics frozen) and behind
  ``stop_gradient``, so fit never changes it. It is saved inside the
  ``.keras`` file (non-trainable) so a loaded model can go on distilling.
  Where its input size differs from the student's, the student's images are
  resized bilinearly (``keras.ops.image.resize``) for it.
  A teacher may also be a model ``images -> embedding`` (one output, e.g. the
  pretrained ``dlib-resnet-v1``); then only the embedding terms can use it.
* ``distill_projection``: a bias-free float32 ``Dense(teacher_dim)`` from the
  student embedding (:func:`~kerasface.models.embedding_layers.projection_layer`),
  created only when an embedding term (``embedding_l2``, ``embedding_distill``)
  is on and the two embeddings differ in size (report 002's T-S checkpoints
  "contain weights of the embedding layer" for this reason). It is not part of
  ``backbone``. (The classification trainer does not use it: it appends the same
  layer to the student's embedding model instead,
  :func:`~kerasface.models.embedding_layers.with_projection`, so that the saved
  ``model.keras`` gives the embedding that was distilled.)

Inputs: ``{"image": images, "label": integer labels}`` (the label is read by
:meth:`compute_loss` when ``y`` is not given; ``call`` ignores it), or images
alone. The dict may also hold ``"teacher_embedding"``: the teacher's embedding
of each image, computed beforehand (e.g. cached once per image on the teacher's
own face chips, :mod:`kerasface.training.teacher_cache`); the
``embedding_distill`` term then reads it and the teacher is not run (a model
built with ``teacher=None, teacher_embedding_dim=D`` has no teacher at all).
Labels are needed only by the label terms (``ce``, ``center``, ``triplet``):
pure embedding distillation trains without them. ``call`` returns the
student's logits. ``model.backbone`` is the student embedding model to keep and
save on its own.

Loss (:meth:`compute_loss`, Keras 3's backend-agnostic hook; every term is
computed at most once per step, and not at all when its weight is 0):

====================  =====================================================
metric                term (times its constructor weight)
====================  =====================================================
``loss_ce``           ``ce_weight`` x cross entropy with the labels, times
                      ``sample_weight``; with ``hard_mining_fraction < 1``
                      reweighted by :func:`~kerasface.losses.hard_instance_weights`,
                      with ``hard_mining_threshold > 0`` by
                      :func:`~kerasface.losses.threshold_instance_weights`
``loss_center``       ``center_weight`` x :class:`~kerasface.losses.CenterLoss`
                      on the embedding (centres move only when training;
                      ``center_update`` its rule)
``loss_prelogit_norm`` ``prelogit_norm_weight`` x :func:`~kerasface.losses.prelogit_norm_loss`
``loss_triplet``      ``triplet_weight`` x batch-hard triplet loss
                      (:func:`~kerasface.losses.batch_hard_triplet_loss`,
                      ``triplet_average``) on the L2-normalised embedding
                      (``triplet_normalize``), or with ``triplet_embedding_dim
                      > 0`` on a separate ``Dense(triplet_embedding_dim)``
                      (``triplet_embedding``, with bias) of the embedding;
                      margin ``triplet_margin``
``loss_embedding_l2`` ``embedding_l2_weight`` x :func:`~kerasface.losses.embedding_l2_loss`
                      (student embedding, projected if needed, vs teacher's;
                      ``embedding_l2_reduction``)
``loss_embedding_distill`` ``embedding_distill_weight`` x
                      :func:`~kerasface.losses.embedding_distillation_loss` (unit
                      student embedding, projected if needed, vs the unit teacher
                      embedding; ``embedding_distill_metric`` cosine or l2), the
                      teacher's from ``x["teacher_embedding"]`` when given
``loss_soft_ce``      ``soft_ce_weight`` x :func:`~kerasface.losses.soft_cross_entropy`
                      at ``temperature`` (``soft_ce_kind``; default ``T^2 * KL``)
``loss_projected_soft_ce`` ``projected_soft_ce_weight`` x the same soft cross entropy
                      of ``projection_classifier(distill_projection(embedding))``
                      against the teacher (report 002's ``s_embed_CE``)
``loss_hard_ce``      ``hard_ce_weight`` x :func:`~kerasface.losses.hard_cross_entropy`
                      (against the teacher's argmax)
``loss_logit_mse``    ``logit_mse_weight`` x :func:`~kerasface.losses.logit_mse_loss`
                      (an option; report 002's ``train_TS.py`` does not use it)
====================  =====================================================

The metrics hold the *weighted* terms, so with ``loss_sum="once"`` (the
default) they add up to ``loss`` (plus any kernel-regulariser losses of the
student). ``loss_sum="doubling"`` sums the first four terms as report 002's
``utils.LossFunctions`` does (``loss += term + loss`` for each trick switched
on, in the order pre-logit norm, centre, triplet): ``total = ce``, then
``total = 2 * total + term`` for each of those active terms, so with all three
on the total is ``8 ce + 4 prelogit_norm + 2 center + triplet``; the teacher
terms are added once after that. Under a ``tf.distribute`` strategy
the returned total is divided by the number of replicas, as Keras's default
``compute_loss`` does (the centres of :class:`~kerasface.losses.CenterLoss`
are then averaged over the replicas' updates). The forward pass runs once:
``call`` keeps the embedding of the logits it returns and
:meth:`compute_loss` reuses it when given those logits (otherwise, e.g. when
called by hand with other ``y_pred``, it runs the backbone itself).
"""

from __future__ import annotations

import warnings

import keras
from keras import ops

from kerasface.losses.center import CenterLoss
from kerasface.losses.distillation import (
    EMBEDDING_L2_REDUCTIONS,
    SOFT_CE_KINDS,
    embedding_l2_loss,
    hard_cross_entropy,
    logit_mse_loss,
    soft_cross_entropy,
)
from kerasface.losses.embedding_distillation import EMBEDDING_DISTILL_METRICS, embedding_distillation_loss
from kerasface.losses.hard_mining import HARD_MINING_RULES, hard_instance_weights, threshold_instance_weights
from kerasface.losses.online import batch_hard_triplet_loss
from kerasface.losses.regularizers import prelogit_norm_loss
from kerasface.models.embedding_layers import projection_layer
from kerasface.ops import l2_normalize

try:  # Keras's own per-replica scaling of a loss (1 / replicas under tf.distribute, else identity)
    from keras.src.losses.loss import scale_loss_for_distribution
except ImportError:  # pragma: no cover - a Keras without it: no strategy-aware scaling
    def scale_loss_for_distribution(value):
        return value

__all__ = ["EMBEDDING_TERMS", "LABEL_TERMS", "LOGIT_TERMS", "LOSS_SUMS", "LOSS_TERMS", "DistillationModel",
           "Report002Model"]

# term name -> constructor weight argument; metrics are "loss_" + name
LOSS_TERMS = {
    "ce": "ce_weight",
    "center": "center_weight",
    "prelogit_norm": "prelogit_norm_weight",
    "triplet": "triplet_weight",
    "embedding_l2": "embedding_l2_weight",
    "soft_ce": "soft_ce_weight",
    "projected_soft_ce": "projected_soft_ce_weight",
    "hard_ce": "hard_ce_weight",
    "logit_mse": "logit_mse_weight",
    "embedding_distill": "embedding_distill_weight",
}
TEACHER_TERMS = ("embedding_l2", "soft_ce", "projected_soft_ce", "hard_ce", "logit_mse", "embedding_distill")
#: Terms that read the labels, and terms that read the logits (the classifier trains only with the latter).
LABEL_TERMS = ("ce", "center", "triplet")
LOGIT_TERMS = ("ce", "soft_ce", "hard_ce", "logit_mse")
#: Terms that compare the student's embedding with the teacher's (through ``distill_projection`` if needed).
EMBEDDING_TERMS = ("embedding_l2", "embedding_distill")
#: How the terms add up (module docstring): each once, or report 002's code's doubling.
LOSS_SUMS = ("once", "doubling")
_DOUBLED = ("prelogit_norm", "center", "triplet")  # the doubling order of report 002's code


class _Stash:
    """Plain holder (not tracked by Keras) for the last forward pass's tensors."""

    logits = None
    embedding = None


@keras.saving.register_keras_serializable(package="kerasface")
class DistillationModel(keras.Model):
    """Student backbone + ``Dense(num_classes)`` classifier, with the loss terms of the module docstring.

    Args:
        backbone: a built model, images -> embedding ``(batch, dim)``.
        num_classes: identities of the classifier.
        teacher: ``None``, a model ``images -> [embedding, logits]``, or a
            :class:`DistillationModel`; frozen.
        ce_weight, center_weight, prelogit_norm_weight, triplet_weight,
        embedding_l2_weight, soft_ce_weight, hard_ce_weight, logit_mse_weight:
            weights of the terms (0 = off, not computed); teacher terms need a
            teacher.
        hard_mining_fraction: share of the batch kept by hard instance mining
            (1 = off); ``hard_mining_rule`` ``"top_k"`` or ``"downweight"``,
            ``hard_mining_easy_weight`` for the latter.
        hard_mining_threshold: the threshold rule instead (0 = off): CE terms
            below this x the batch maximum are multiplied by it (report 002's
            code: 0.7); not together with ``hard_mining_fraction < 1``.
        center_alpha: centre update rate; center_update: ``"wen"`` or
            ``"sandberg"`` (:class:`~kerasface.losses.CenterLoss`);
            prelogit_norm_p: the ``p`` of the norm; triplet_margin: margin of
            the batch-hard triplet term; triplet_embedding_dim: 0 = on the
            embedding, else on a separate linear embedding of this size;
            triplet_normalize: L2-normalise what the triplet term reads;
            triplet_average: ``"valid"`` or ``"all"`` anchors;
            temperature: ``T`` of the soft cross entropy; soft_ce_kind:
            ``"kl"``, ``"ce"`` or ``"ce_eps"``;
            embedding_l2_reduction: ``"sum"`` or ``"mean"`` over the dimensions;
            projection_bias: bias of ``distill_projection``; loss_sum:
            ``"once"`` or ``"doubling"`` (module docstring).
        classifier_bias: the classifier's bias (the report's has one).
        embedding_distill_weight: weight of the unit-embedding distillation
            term; ``embedding_distill_metric`` ``"cosine"`` or ``"l2"``.
        teacher_embedding_dim: the teacher's embedding size when the teacher's
            embeddings come precomputed in ``x["teacher_embedding"]`` (then
            ``teacher`` may be None).
    """

    default_name = "distillation"

    def __init__(self, backbone, num_classes, teacher=None, ce_weight=1.0, center_weight=0.0,
                 prelogit_norm_weight=0.0, triplet_weight=0.0, embedding_l2_weight=0.0,
                 soft_ce_weight=0.0, hard_ce_weight=0.0, logit_mse_weight=0.0,
                 hard_mining_fraction=1.0, hard_mining_rule="top_k", hard_mining_easy_weight=0.1,
                 center_alpha=0.5, prelogit_norm_p=1.0, triplet_margin=0.2, temperature=4.0,
                 classifier_bias=True, projected_soft_ce_weight=0.0, hard_mining_threshold=0.0,
                 center_update="wen", triplet_embedding_dim=0, triplet_normalize=True, triplet_average="valid",
                 soft_ce_kind="kl", embedding_l2_reduction="sum", projection_bias=False, loss_sum="once",
                 embedding_distill_weight=0.0, embedding_distill_metric="cosine", teacher_embedding_dim=None,
                 **kwargs):
        kwargs.setdefault("name", self.default_name)
        trainable = kwargs.pop("trainable", True)
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        weights = {"ce_weight": ce_weight, "center_weight": center_weight,
                   "prelogit_norm_weight": prelogit_norm_weight, "triplet_weight": triplet_weight,
                   "embedding_l2_weight": embedding_l2_weight, "soft_ce_weight": soft_ce_weight,
                   "hard_ce_weight": hard_ce_weight, "logit_mse_weight": logit_mse_weight,
                   "projected_soft_ce_weight": projected_soft_ce_weight,
                   "embedding_distill_weight": embedding_distill_weight}
        for key, value in weights.items():
            if not value >= 0.0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        if hard_mining_rule not in HARD_MINING_RULES:
            raise ValueError(f"hard_mining_rule must be one of {HARD_MINING_RULES}, got {hard_mining_rule!r}")
        if not 0.0 < hard_mining_fraction <= 1.0:
            raise ValueError(f"hard_mining_fraction must be in (0, 1], got {hard_mining_fraction}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if embedding_distill_metric not in EMBEDDING_DISTILL_METRICS:
            raise ValueError(f"embedding_distill_metric must be one of {EMBEDDING_DISTILL_METRICS}, "
                             f"got {embedding_distill_metric!r}")
        if teacher_embedding_dim is not None and int(teacher_embedding_dim) < 1:
            raise ValueError(f"teacher_embedding_dim must be positive, got {teacher_embedding_dim}")
        self.embedding_distill_metric = embedding_distill_metric
        self.teacher_embedding_dim = None if teacher_embedding_dim is None else int(teacher_embedding_dim)
        if not 0.0 <= hard_mining_threshold < 1.0:
            raise ValueError(f"hard_mining_threshold must be in [0, 1), got {hard_mining_threshold}")
        if hard_mining_threshold > 0 and hard_mining_fraction < 1.0:
            raise ValueError("hard_mining_threshold and hard_mining_fraction < 1 are two mining rules; pick one")
        if loss_sum not in LOSS_SUMS:
            raise ValueError(f"loss_sum must be one of {LOSS_SUMS}, got {loss_sum!r}")
        if soft_ce_kind not in SOFT_CE_KINDS:
            raise ValueError(f"soft_ce_kind must be one of {SOFT_CE_KINDS}, got {soft_ce_kind!r}")
        if embedding_l2_reduction not in EMBEDDING_L2_REDUCTIONS:
            raise ValueError(f"embedding_l2_reduction must be one of {EMBEDDING_L2_REDUCTIONS}, "
                             f"got {embedding_l2_reduction!r}")
        if triplet_average not in ("valid", "all"):
            raise ValueError(f"triplet_average must be 'valid' or 'all', got {triplet_average!r}")
        if int(triplet_embedding_dim) < 0:
            raise ValueError(f"triplet_embedding_dim must be >= 0, got {triplet_embedding_dim}")
        self.hard_mining_threshold = float(hard_mining_threshold)
        self.center_update = center_update
        self.triplet_embedding_dim = int(triplet_embedding_dim)
        self.triplet_normalize = bool(triplet_normalize)
        self.triplet_average = triplet_average
        self.soft_ce_kind = soft_ce_kind
        self.embedding_l2_reduction = embedding_l2_reduction
        self.projection_bias = bool(projection_bias)
        self.loss_sum = loss_sum
        self.num_classes = int(num_classes)
        self.term_weights = {term: float(weights[arg]) for term, arg in LOSS_TERMS.items()}
        self.hard_mining_fraction = float(hard_mining_fraction)
        self.hard_mining_rule = hard_mining_rule
        self.hard_mining_easy_weight = float(hard_mining_easy_weight)
        self.center_alpha = float(center_alpha)
        self.prelogit_norm_p = float(prelogit_norm_p)
        self.triplet_margin = float(triplet_margin)
        self.temperature = float(temperature)
        self.classifier_bias = bool(classifier_bias)

        self.backbone = backbone
        dim = int(backbone.output_shape[-1])
        self.embedding_dim = dim
        self.classifier = keras.layers.Dense(self.num_classes, use_bias=self.classifier_bias,
                                             dtype="float32", name="classifier")
        self.classifier.build((None, dim))

        needs_teacher = [t for t in TEACHER_TERMS if self.term_weights[t] > 0
                         and not (t == "embedding_distill" and self.teacher_embedding_dim is not None)]
        if needs_teacher and teacher is None:
            raise ValueError(f"terms {needs_teacher} need a teacher"
                             + (" (or teacher_embedding_dim, with x['teacher_embedding'] given)"
                                if needs_teacher == ["embedding_distill"] else ""))
        self.teacher = teacher
        self.distill_projection = None
        self._teacher_size = None
        t_emb_dim = self.teacher_embedding_dim
        if teacher is not None:
            teacher.trainable = False
            t_backbone = teacher.backbone if isinstance(teacher, DistillationModel) else teacher
            t_emb_dim, t_classes = self._teacher_dims(teacher)
            logit_terms = [t for t in ("soft_ce", "projected_soft_ce", "hard_ce", "logit_mse")
                           if self.term_weights[t] > 0]
            if logit_terms and t_classes is None:
                raise ValueError(f"terms {logit_terms} need a teacher with logits; this one gives an embedding only")
            if logit_terms and t_classes != self.num_classes:
                raise ValueError(f"teacher has {t_classes} classes, the student {self.num_classes}")
            if self.teacher_embedding_dim is not None and self.teacher_embedding_dim != t_emb_dim:
                raise ValueError(f"teacher_embedding_dim {self.teacher_embedding_dim} but the teacher's "
                                 f"embedding has {t_emb_dim}")
            t_size = tuple(t_backbone.input_shape[1:3]) if not isinstance(t_backbone.input_shape, list) \
                else tuple(t_backbone.input_shape[0][1:3])
            if None not in t_size and t_size != tuple(backbone.input_shape[1:3]):
                self._teacher_size = tuple(int(s) for s in t_size)
        if t_emb_dim is not None and (self.term_weights["projected_soft_ce"] > 0 or (
                t_emb_dim != dim and any(self.term_weights[t] > 0 for t in EMBEDDING_TERMS))):
            self.distill_projection = projection_layer(t_emb_dim, use_bias=self.projection_bias)
            self.distill_projection.build((None, dim))
        self.projection_classifier = None
        if self.term_weights["projected_soft_ce"] > 0:
            self.projection_classifier = keras.layers.Dense(self.num_classes, dtype="float32",
                                                            name="projection_classifier")
            self.projection_classifier.build((None, self.distill_projection.units))
        self.triplet_embedding = None
        if self.term_weights["triplet"] > 0 and self.triplet_embedding_dim > 0:
            self.triplet_embedding = keras.layers.Dense(self.triplet_embedding_dim, dtype="float32",
                                                        name="triplet_embedding")
            self.triplet_embedding.build((None, dim))

        self.center_loss = None
        if self.term_weights["center"] > 0:
            self.center_loss = CenterLoss(self.num_classes, self.center_alpha, self.center_update,
                                          name="center_loss")
            self.center_loss.build([(None, dim), (None,)])

        self._active = [t for t in LOSS_TERMS if self.term_weights[t] > 0]
        for term in self._active:
            setattr(self, f"_{term}_tracker", keras.metrics.Mean(name=f"loss_{term}"))
        self._stash = _Stash()
        if not self.trains_classifier:
            self.classifier.trainable = False  # no term reads the logits: nothing would train it
        self.built = True
        if not trainable:  # after every sublayer exists, so that it reaches them all
            self.trainable = False

    # --- helpers -------------------------------------------------------------------------------
    @property
    def trains_classifier(self) -> bool:
        """Whether a term reads the logits (``LOGIT_TERMS``): only then is the classifier trained (pure
        embedding distillation trains none, and its accuracy would mean nothing)."""
        return any(self.term_weights[t] > 0 for t in LOGIT_TERMS)

    @staticmethod
    def _teacher_dims(teacher):
        if isinstance(teacher, DistillationModel):
            return teacher.embedding_dim, teacher.num_classes
        shapes = teacher.output_shape
        if isinstance(shapes, tuple) and len(shapes) == 2 and isinstance(shapes[-1], int):
            return int(shapes[-1]), None  # images -> embedding
        if not isinstance(shapes, (list, tuple)) or len(shapes) != 2 or not isinstance(shapes[0], (list, tuple)):
            raise ValueError("teacher must be a DistillationModel or a model images -> [embedding, logits], "
                             f"got output shape {shapes}")
        return int(shapes[0][-1]), int(shapes[1][-1])

    @staticmethod
    def _split(inputs):
        if isinstance(inputs, dict):
            return inputs["image"], inputs.get("label")
        if isinstance(inputs, (list, tuple)):
            return inputs[0], (inputs[1] if len(inputs) > 1 else None)
        return inputs, None

    def teacher_outputs(self, images):
        """``(embedding, logits)`` of the frozen teacher for the student's images (resized if needed);
        ``logits`` is None for a teacher that gives an embedding only."""
        if self.teacher is None:
            raise ValueError("this model has no teacher")
        x = images
        if self._teacher_size is not None:
            x = ops.image.resize(x, self._teacher_size, interpolation="bilinear")
        if isinstance(self.teacher, DistillationModel):
            emb = self.teacher.backbone(x, training=False)
            logits = self.teacher.classifier(emb)
        elif self._teacher_dims(self.teacher)[1] is None:
            emb, logits = self.teacher(x, training=False), None
        else:
            emb, logits = self.teacher(x, training=False)
        emb = ops.stop_gradient(ops.cast(emb, "float32"))
        return emb, (None if logits is None else ops.stop_gradient(ops.cast(logits, "float32")))

    # --- forward and loss ----------------------------------------------------------------------
    def call(self, inputs, training=None):
        images, _ = self._split(inputs)
        embedding = self.backbone(images, training=training)
        logits = self.classifier(embedding)
        self._stash.logits, self._stash.embedding = logits, embedding
        return logits

    def loss_terms(self, images, labels, embedding, logits, sample_weight=None, training=False,
                   teacher_embedding=None):
        """``{term: weighted value}`` for the active terms, each computed once. ``teacher_embedding``: the
        teacher's embeddings of the images, precomputed (read by ``embedding_distill`` instead of the teacher)."""
        w = self.term_weights
        if labels is not None:
            labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        emb = ops.cast(embedding, "float32")
        logits = ops.cast(logits, "float32")
        terms = {}
        if w["ce"] > 0:
            log_q = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
            per_sample = -ops.take_along_axis(log_q, labels[:, None], axis=-1)[:, 0]
            if sample_weight is not None:
                per_sample = per_sample * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            if self.hard_mining_fraction < 1.0:
                per_sample = per_sample * hard_instance_weights(
                    per_sample, self.hard_mining_fraction, self.hard_mining_rule, self.hard_mining_easy_weight)
            elif self.hard_mining_threshold > 0.0:
                per_sample = per_sample * threshold_instance_weights(per_sample, self.hard_mining_threshold)
            terms["ce"] = w["ce"] * ops.mean(per_sample)
        if w["center"] > 0:
            terms["center"] = w["center"] * self.center_loss([emb, labels], training=bool(training))
        if w["prelogit_norm"] > 0:
            terms["prelogit_norm"] = w["prelogit_norm"] * prelogit_norm_loss(emb, self.prelogit_norm_p)
        if w["triplet"] > 0:
            t_in = self.triplet_embedding(emb) if self.triplet_embedding is not None else emb
            if self.triplet_normalize:
                t_in = l2_normalize(t_in)
            terms["triplet"] = w["triplet"] * batch_hard_triplet_loss(labels, t_in, margin=self.triplet_margin,
                                                                      average=self.triplet_average)
        s_emb = self.distill_projection(emb) if self.distill_projection is not None else emb
        # the frozen teacher runs once per step, for every term that needs it live
        live = any(w[t] > 0 for t in TEACHER_TERMS if t != "embedding_distill") \
            or (w["embedding_distill"] > 0 and teacher_embedding is None)
        if live and self.teacher is None:
            raise ValueError("embedding_distill without a teacher needs x['teacher_embedding']")
        t_emb, t_logits = self.teacher_outputs(images) if live else (None, None)
        if w["embedding_distill"] > 0:
            target = teacher_embedding if teacher_embedding is not None else t_emb
            value = embedding_distillation_loss(s_emb, target, self.embedding_distill_metric, sample_weight)
            terms["embedding_distill"] = w["embedding_distill"] * value
        if any(w[t] > 0 for t in TEACHER_TERMS if t != "embedding_distill"):
            if w["embedding_l2"] > 0:
                terms["embedding_l2"] = w["embedding_l2"] * embedding_l2_loss(s_emb, t_emb,
                                                                              self.embedding_l2_reduction)
            if w["soft_ce"] > 0:
                terms["soft_ce"] = w["soft_ce"] * soft_cross_entropy(logits, t_logits, self.temperature,
                                                                     self.soft_ce_kind)
            if w["projected_soft_ce"] > 0:
                p_logits = self.projection_classifier(s_emb)  # s_emb is the projection: it exists for this term
                terms["projected_soft_ce"] = w["projected_soft_ce"] * soft_cross_entropy(
                    p_logits, t_logits, self.temperature, self.soft_ce_kind)
            if w["hard_ce"] > 0:
                terms["hard_ce"] = w["hard_ce"] * hard_cross_entropy(logits, t_logits)
            if w["logit_mse"] > 0:
                terms["logit_mse"] = w["logit_mse"] * logit_mse_loss(logits, t_logits)
        return terms

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        images, labels = self._split(x)
        teacher_embedding = x.get("teacher_embedding") if isinstance(x, dict) else None
        if y is not None:
            labels = y
        if labels is None and any(self.term_weights[t] > 0 for t in LABEL_TERMS):
            raise ValueError(f"{type(self).__name__} needs labels: x['label'] or y")
        if y_pred is not None and y_pred is self._stash.logits:
            embedding, logits = self._stash.embedding, y_pred
        else:  # not the logits of the last call: run the student here
            embedding = self.backbone(images, training=training)
            logits = self.classifier(embedding)
        self._stash.logits = self._stash.embedding = None
        terms = self.loss_terms(images, labels, embedding, logits, sample_weight, training, teacher_embedding)
        for term, value in terms.items():
            getattr(self, f"_{term}_tracker").update_state(value)
        total = self.sum_terms(terms)
        student_losses = list(self.backbone.losses) + list(self.classifier.losses)
        for extra in (self.distill_projection, self.projection_classifier, self.triplet_embedding):
            if extra is not None:
                student_losses += list(extra.losses)
        if student_losses:
            total = total + ops.sum(ops.stack([ops.cast(v, "float32") for v in student_losses]))
        # like Keras's default compute_loss: divided by the replicas in sync, so that the
        # gradients summed over replicas are those of the global mean (the loss metric undoes it)
        return scale_loss_for_distribution(total)

    def sum_terms(self, terms):
        """The total of ``{term: weighted value}`` under ``loss_sum`` (module docstring)."""
        total = ops.convert_to_tensor(0.0, "float32")
        if self.loss_sum == "doubling":
            total = total + terms.get("ce", 0.0)
            for term in _DOUBLED:
                if term in terms:
                    total = 2.0 * total + terms[term]
            rest = [t for t in terms if t != "ce" and t not in _DOUBLED]
        else:
            rest = list(terms)
        for term in rest:
            total = total + terms[term]
        return total

    # --- serialisation -------------------------------------------------------------------------
    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "teacher": (keras.saving.serialize_keras_object(self.teacher)
                        if self.teacher is not None else None),
            "hard_mining_fraction": self.hard_mining_fraction,
            "hard_mining_rule": self.hard_mining_rule,
            "hard_mining_easy_weight": self.hard_mining_easy_weight,
            "center_alpha": self.center_alpha,
            "prelogit_norm_p": self.prelogit_norm_p,
            "triplet_margin": self.triplet_margin,
            "temperature": self.temperature,
            "classifier_bias": self.classifier_bias,
            "embedding_distill_metric": self.embedding_distill_metric,
            "teacher_embedding_dim": self.teacher_embedding_dim,
            "hard_mining_threshold": self.hard_mining_threshold,
            "center_update": self.center_update,
            "triplet_embedding_dim": self.triplet_embedding_dim,
            "triplet_normalize": self.triplet_normalize,
            "triplet_average": self.triplet_average,
            "soft_ce_kind": self.soft_ce_kind,
            "embedding_l2_reduction": self.embedding_l2_reduction,
            "projection_bias": self.projection_bias,
            "loss_sum": self.loss_sum,
        }
        config.update({arg: self.term_weights[term] for term, arg in LOSS_TERMS.items()})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if config.get("teacher") is not None:
            config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="kerasface")
class Report002Model(DistillationModel):
    """Deprecated name of :class:`DistillationModel`, kept so that ``.keras`` files saved under
    ``"kerasface>Report002Model"`` still load (they load as this subclass, which behaves the same).

    New code builds a :class:`DistillationModel`; this alias goes in a later release.
    """

    default_name = "report002"

    def __init__(self, *args, **kwargs):
        warnings.warn("kerasface.models.Report002Model is deprecated; use DistillationModel",
                      DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)
