"""Old import path of :func:`~kerasface.training.tasks.classify.train_classifier` (the CLI modules import it from here);
new code imports it from :mod:`kerasface.training`. Delete once no caller uses this path."""

from kerasface.training.tasks.classify import train_classifier

__all__ = ["train_classifier"]
