"""kerasface: face recognition experiments in Keras 3 / TensorFlow.

Importing the package registers every custom layer and loss with Keras, so
``keras.saving.load_model("model.keras")`` works after ``import kerasface``
with the default ``safe_mode=True`` and no ``custom_objects``.
"""

__version__ = "0.1.0"

from kerasface import layers  # noqa: F401  (registers the custom layers)
from kerasface import losses  # noqa: F401  (registers the losses and metrics)
from kerasface import models  # noqa: F401

__all__ = ["layers", "losses", "models", "__version__"]
