"""LSTM extender: predicts the next frame of a piano roll; extends a prompt one step at a time.

Frames are binary (which pitches sound); the model gives, per pitch, the probability that it sounds
at the next step (sigmoid, binary cross-entropy). Velocity is not modelled: generated notes take
the prompt's mean velocity (the demo corpus has one velocity throughout; a second output would
have nothing to learn from it).

The package's modules, one job each:

- :mod:`.model`: the Keras networks (training and step), the network's input encoding, and the
  model side of ``musicgen.train``'s model-module interface;
- :mod:`.windows`: training windows cut on the fly from per-piece rolls (the data side);
- :mod:`.step`: one LSTM step on the trained weights (numpy, or XLA for several rows of a big net);
- :mod:`.engine`: generation: per-row state, one batched step for all rows, :class:`Extender`.

Generation is incremental: the LSTM state is carried, so each new step costs one frame through
the network instead of re-running a whole window.

This package is ``musicgen.train``'s model module ``lstm`` (``build_model``, ``compile_model``,
``examples``, ``train_batches``, ``val_arrays``, ``epoch_metrics``, ``callbacks``) and the place
other modules import generation from.
"""
from .engine import (BLOCKS, MAX_STEPS, RANDOM_CHUNK, STEP_ROWS, Batch, Extender, Row, check_extend_args,
                     exact_block, mean_velocity, padded_rows, sample_frames)
from .model import (SPARSE_LOGIT, build_model, build_step_model, callbacks, compile_model, epoch_metrics, features,
                    n_features, network_input)
from .windows import examples, half_speed, piece_windows, train_batches, val_arrays, window_batches

__all__ = ["BLOCKS", "MAX_STEPS", "RANDOM_CHUNK", "STEP_ROWS", "Batch", "Extender", "Row", "check_extend_args",
           "exact_block", "mean_velocity", "padded_rows", "sample_frames", "SPARSE_LOGIT", "build_model",
           "build_step_model", "callbacks", "compile_model", "epoch_metrics", "features", "n_features",
           "network_input", "examples", "half_speed", "piece_windows", "train_batches", "val_arrays", "window_batches"]
