"""The one import of Keras: tf-keras (Keras 2), which Ray Train's multi-worker strategy works with.

Import Keras as ``from musicgen.keras import keras, tf``. TF_USE_LEGACY_KERAS makes ``tf.keras``
(used inside Ray's TensorFlow integration) the same Keras 2, not Keras 3. TensorFlow's start-up
lines are hidden unless MUSICGEN_VERBOSE is set (:func:`musicgen.runtime.quiet_tensorflow`).
"""
import os

from .runtime import quiet_tensorflow

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
quiet_tensorflow()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
