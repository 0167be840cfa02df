"""Old import path of :func:`~kerasface.training.tasks.triplet.train_triplet` (the CLI modules import it from here);
new code imports it from :mod:`kerasface.training`. Delete once no caller uses this path."""

from kerasface.training.tasks.triplet import train_triplet

__all__ = ["train_triplet"]
