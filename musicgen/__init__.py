"""musicgen: piano-roll music models (LSTM extender, VAE generator) trained and served on Ray.

Data flows one way: MIDI -> roll (:mod:`musicgen.midi`) -> Parquet dataset (:mod:`musicgen.prepare`,
:mod:`musicgen.dataset`) -> Ray Data -> model -> roll -> MIDI. Importing musicgen starts nothing.
"""
__version__ = "0.1.0"
