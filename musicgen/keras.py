"""The one import of Keras: tf-keras (Keras 2), which Ray Train's multi-worker strategy works with.

Import Keras as ``from musicgen.keras import keras, tf``. TF_USE_LEGACY_KERAS makes ``tf.keras``
(used inside Ray's TensorFlow integration) the same Keras 2, not Keras 3.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
