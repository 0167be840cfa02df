"""Optimizers, the SGDR learning-rate schedule and layer freezing of reports 001 and 003.

* :func:`make_optimizer` — Adam (b1 0.9, b2 0.999, eps 1e-8) or AdamW (decoupled
  weight decay, default 0.01: each step ``w -= lr * wd * w`` on the variables being
  trained, as ``torch.optim.AdamW``), with a constant rate or a schedule.
* :func:`cosine_warm_restarts` — Keras 3 ``CosineDecayRestarts`` configured in epochs:
  ``lr(t) = min_lr + (initial_lr - min_lr) (1 + cos(pi t_cur / T_i)) / 2`` with
  ``T_0 = cycle_epochs * steps_per_epoch`` optimizer steps (torch's
  ``CosineAnnealingWarmRestarts(T_0, T_mult=t_mul, eta_min=min_lr)`` stepped once per
  batch); ``m_mul`` scales each cycle's peak (and floor) in Keras's way.
* :func:`freeze_first` — freeze the first ``n`` layers (or those named with a prefix)
  for the whole run.
* :class:`GradualUnfreezing` — a callback: all blocks but the head frozen at the start,
  the next block(s) from the top unfrozen every ``every`` epochs.

How Keras 3 (3.15, TensorFlow backend) treats ``layer.trainable`` during ``fit``:
``train_step`` reads ``model.trainable_weights`` while the train function is *traced*,
so the traced ``tf.function`` keeps the variable list it was traced with; flipping
``trainable`` later changes nothing until the function is rebuilt with
``model.make_train_function(force=True)`` (``fit`` calls ``self.train_function`` anew
every step, so a rebuild in ``on_epoch_begin`` takes effect at once).  The optimizer
is built once, on the variables trainable when ``fit`` starts, and refuses variables it
was not built with (``Unknown variable``); so :class:`GradualUnfreezing` needs the
optimizer built on *every* variable it will ever unfreeze: compile with the model
unfrozen and let the callback freeze it in ``on_train_begin`` (it builds an unbuilt
optimizer on all block variables itself and raises a clear error otherwise).
Adam/AdamW slot variables then exist for every variable from the start and stay at
zero while it is frozen (frozen variables get no update and no weight decay).

BatchNormalization: a frozen BN layer (``trainable=False``) runs in inference mode in
Keras 3 — it normalises with its moving statistics and does not update them — both
under :func:`freeze_first` and while :class:`GradualUnfreezing` keeps it frozen; once
unfrozen it goes back to batch statistics in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from kerasface.optimizers import FusedAdam, FusedAdamW

__all__ = ["make_optimizer", "cosine_warm_restarts", "freeze_first", "GradualUnfreezing"]


def make_optimizer(name: str = "adam", learning_rate=1e-3, weight_decay: float = 0.01, beta_1: float = 0.9,
                   beta_2: float = 0.999, epsilon: float = 1e-8, schedule=None) -> keras.optimizers.Optimizer:
    """Adam or AdamW with the reports' defaults: :class:`kerasface.optimizers.FusedAdam` / ``FusedAdamW``
    (Keras's optimizers with each variable's update as one fused kernel; the same update).

    ``schedule`` (a ``LearningRateSchedule``, e.g. :func:`cosine_warm_restarts`)
    replaces ``learning_rate`` when given.  ``weight_decay`` applies to ``"adamw"`` only.
    Note Keras's default ``epsilon`` is 1e-7; the reports (and torch) use 1e-8.
    """
    lr = schedule if schedule is not None else learning_rate
    common = dict(learning_rate=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    key = name.lower()
    if key == "adam":
        return FusedAdam(**common)
    if key == "adamw":
        return FusedAdamW(weight_decay=weight_decay, **common)
    raise ValueError(f"unknown optimizer {name!r}; choose 'adam' or 'adamw'")


def cosine_warm_restarts(initial_lr: float, steps_per_epoch: int, cycle_epochs: float, min_lr: float = 0.0,
                         t_mul: float = 1.0, m_mul: float = 1.0) -> keras.optimizers.schedules.CosineDecayRestarts:
    """SGDR (cosine annealing with warm restarts) with its first cycle ``cycle_epochs`` epochs long.

    ``first_decay_steps = round(cycle_epochs * steps_per_epoch)``,
    ``alpha = min_lr / initial_lr``.  Report 001: ``cosine_warm_restarts(1e-3,
    steps, 10, 1e-5)``; report 003 tried ``T_0 = 3`` epochs, ``eta_min = 3e-5``.
    """
    if initial_lr <= 0 or not 0 <= min_lr <= initial_lr:
        raise ValueError(f"need 0 <= min_lr <= initial_lr and initial_lr > 0, got {initial_lr}, {min_lr}")
    first = int(round(cycle_epochs * steps_per_epoch))
    if first < 1:
        raise ValueError(f"a cycle must be at least one step, got cycle_epochs={cycle_epochs} x "
                         f"steps_per_epoch={steps_per_epoch}")
    return keras.optimizers.schedules.CosineDecayRestarts(
        initial_learning_rate=float(initial_lr), first_decay_steps=first, t_mul=float(t_mul), m_mul=float(m_mul),
        alpha=float(min_lr) / float(initial_lr), name="cosine_warm_restarts")


def _own_layers(model: keras.Model) -> list:
    """``model.layers`` without input layers."""
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _refresh(model: keras.Model) -> None:
    """Re-trace the train function if one was traced (it captured the old trainable set)."""
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def freeze_first(model: keras.Model, n: int | None = None,
                 prefix: str | Sequence[str] | None = None) -> list[str]:
    """Freeze the first ``n`` layers of ``model.layers`` (input layers not counted), or every layer whose name
    starts with ``prefix``.

    Call before ``compile`` (or before ``fit``; a train function already traced is
    rebuilt).  Frozen BatchNormalization layers run in inference mode.  Returns
    the names of the frozen layers.
    """
    if (n is None) == (prefix is None):
        raise ValueError("give exactly one of n or prefix")
    layers = _own_layers(model)
    if n is not None:
        if n < 0 or n > len(layers):
            raise ValueError(f"n must be in 0..{len(layers)}, got {n}")
        chosen = layers[:n]
    else:
        prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        chosen = [layer for layer in layers if layer.name.startswith(prefixes)]
        if not chosen:
            raise ValueError(f"no layer of {model.name!r} starts with {prefixes}")
    for layer in chosen:
        layer.trainable = False
    _refresh(model)
    return [layer.name for layer in chosen]


class GradualUnfreezing(keras.callbacks.Callback):
    """Train the head first, then unfreeze the model block by block from the top.

    ``blocks``: the model's parts from the input to the output, each a layer
    name, a name prefix ending in ``"*"`` (``"stage3_*"``), or a list of those;
    default: every layer of ``model.layers`` that has weights, one block each.
    The last ``head`` blocks train from the first epoch; at the start of epoch
    ``e`` the top ``head + step * (e // every)`` blocks are trainable (so the
    state follows from the epoch number and a resumed run with
    ``initial_epoch`` gets the right one).  When the trainable set changes the
    train function is rebuilt (``make_train_function(force=True)``) so the
    gradient step includes the new variables.  ``unfrozen`` (attribute) lists
    ``(epoch, number of trainable blocks)`` at each change.
    """

    def __init__(self, blocks: Sequence[str | Sequence[str]] | None = None, every: int = 1, step: int = 1,
                 head: int = 1, verbose: int = 0):
        super().__init__()
        if every < 1 or step < 1 or head < 1:
            raise ValueError(f"every, step and head must be >= 1, got {every}, {step}, {head}")
        self.block_spec = blocks
        self.every, self.step, self.head, self.verbose = int(every), int(step), int(head), verbose
        self._blocks: list[list] = []
        self._n_open = None
        self.unfrozen: list[tuple[int, int]] = []

    def _resolve(self) -> list[list]:
        layers = _own_layers(self.model)
        if self.block_spec is None:
            return [[layer] for layer in layers if layer.weights]
        by_name = {layer.name: layer for layer in layers}
        out = []
        for spec in self.block_spec:
            names = [spec] if isinstance(spec, str) else list(spec)
            block = []
            for nm in names:
                if nm.endswith("*"):
                    found = [layer for layer in layers if layer.name.startswith(nm[:-1])]
                else:
                    found = [by_name[nm]] if nm in by_name else []
                if not found:
                    raise ValueError(f"block entry {nm!r} matches no layer of {self.model.name!r}")
                block.extend(found)
            out.append(block)
        return out

    def _block_variables(self) -> list:
        """Trainable variables of all blocks (call while every block is trainable)."""
        seen, out = set(), []
        for block in self._blocks:
            for layer in block:
                for v in layer.trainable_weights:
                    if id(v) not in seen:
                        seen.add(id(v))
                        out.append(v)
        return out

    def _ensure_optimizer(self) -> None:
        opt = self.model.optimizer
        if opt is None:
            raise ValueError("GradualUnfreezing needs a compiled model")
        for block in self._blocks:  # all blocks trainable while the optimizer is checked/built
            for layer in block:
                layer.trainable = True
        wanted = self.model.trainable_variables
        if not opt.built:
            opt.build(wanted)
            return
        known = {id(v) for v in getattr(opt, "_trainable_variables", [])}
        missing = [v.path for v in self._block_variables() if id(v) not in known]
        if missing:
            raise ValueError(
                f"the optimizer was built without {len(missing)} variable(s) GradualUnfreezing would unfreeze "
                f"(first: {missing[:3]}); compile and fit the model with every block trainable and let the callback "
                "freeze them, or build the optimizer on all of them first")

    def _apply(self, n_open: int, epoch: int) -> None:
        n_open = min(n_open, len(self._blocks))
        if n_open == self._n_open:
            return
        cut = len(self._blocks) - n_open
        for i, block in enumerate(self._blocks):
            for layer in block:
                layer.trainable = i >= cut
        self._n_open = n_open
        self.unfrozen.append((epoch, n_open))
        self.model.make_train_function(force=True)
        if self.verbose:
            print(f"GradualUnfreezing: epoch {epoch}: top {n_open} of {len(self._blocks)} blocks trainable")

    def n_trainable_blocks(self, epoch: int) -> int:
        """How many blocks (from the top) train in ``epoch``."""
        return min(self.head + self.step * (int(epoch) // self.every), len(self._blocks) or 10**9)

    def on_train_begin(self, logs=None):
        self._blocks = self._resolve()
        if self.head > len(self._blocks):
            raise ValueError(f"head={self.head} exceeds the {len(self._blocks)} blocks")
        self._ensure_optimizer()
        self._n_open = None
        self._apply(self.head, -1)

    def on_epoch_begin(self, epoch, logs=None):
        self._apply(self.n_trainable_blocks(epoch), epoch)
