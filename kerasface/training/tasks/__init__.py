"""The training tasks the runner (:mod:`kerasface.training.runner`) runs: each supplies its data, model and summary.

* :mod:`~kerasface.training.tasks.pairs`: a Siamese pair verifier;
* :mod:`~kerasface.training.tasks.classify`: an embedding trained by identity classification (margin heads,
  the centre/triplet/distillation sum) or the angular prototypical loss;
* :mod:`~kerasface.training.tasks.triplet`: a triplet-loss embedding over chunked epochs (offline or online mining).
"""
