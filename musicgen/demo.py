"""The main job on the embedded default: the Bach demo corpus, end to end, on a local Ray.

Writes under one folder::

    bach/                 the chorales as MIDI (musicgen corpus bach)
    dataset/              Parquet shards + manifest.json (musicgen prepare)
    png/                  piano rolls of a train, a validation and a test piece, and an overview
    runs/lstm, runs/vae   trained tiny models: model/, metrics.json, history.json, loss.png
    extend/               three held-out prompts and their continuations (MIDI, WAV, PNG in two colours)
    generated/            eight VAE pieces (MIDI + WAV, one overview PNG)
    summary.json          every figure; summary.md says the same for people
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time

import numpy as np

from .audio import write_wav
from .config import preset
from .corpus import write_corpus
from .dataset import SPLITS, iter_records
from .midi import roll_to_midi
from .plot import plot_roll, plot_rolls
from .prepare import PrepareConfig, prepare, summary

PROMPT_STEPS = 64  # 4 bars of 4/4
EXTEND_STEPS = 64


def run_demo(out: str, limit: int | None = None, epochs: int | None = None, models: bool = True) -> dict:
    """Run the demo into folder ``out``; prints one line per step and its time; returns the summary."""
    from .runtime import ensure_ray

    os.makedirs(out, exist_ok=True)
    step = _Steps(7 if models else 3)
    with step(f"corpus -> {out}/bach"):
        write_corpus("bach", os.path.join(out, "bach"), limit=limit)
    with step(f"prepare -> {out}/dataset (starts a local Ray)"):
        # one quiet Ray for every step: what its workers print (Ray Train's and Ray Data's own
        # logs, several lines a second) stays in Ray's log files; MUSICGEN_VERBOSE shows it
        ensure_ray(quiet=True)
        dataset = os.path.join(out, "dataset")
        manifest = prepare(os.path.join(out, "bach"), dataset, PrepareConfig(overwrite=True))
    text = summary(manifest)
    print(text)
    with step(f"pictures -> {out}/png"):
        _pictures(dataset, os.path.join(out, "png"), manifest["steps_per_beat"])
    result = {"dataset": {k: manifest[k] for k in ("counts", "splits", "bytes", "steps_per_beat")}}
    if models:
        result.update(_models(out, dataset, epochs, step))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(_markdown(text, result))
    print(f"done in {_duration(time.monotonic() - step.start)}: {out}/summary.md")
    return result


class _Steps:
    """``with step(text):`` prints "[i/n] text" as a step starts and its time when it ends; with
    ``heartbeat=True`` (a step without a progress bar of its own) also the time so far, every
    ``HEARTBEAT_S`` seconds, so that a long step is seen to be running."""

    HEARTBEAT_S = 15

    def __init__(self, total: int):
        self.total, self.count, self.start = total, 0, time.monotonic()

    @contextlib.contextmanager
    def __call__(self, text: str, heartbeat: bool = False):
        self.count += 1
        label = f"[{self.count}/{self.total}]"
        print(f"{label} {text}", flush=True)
        start, done = time.monotonic(), threading.Event()

        def beat():
            while not done.wait(self.HEARTBEAT_S):
                print(f"{label} ... {_duration(time.monotonic() - start)}", flush=True)

        beater = threading.Thread(target=beat, daemon=True)
        if heartbeat:
            beater.start()
        try:
            yield
        finally:
            done.set()
            if heartbeat:
                beater.join()
        print(f"{label} done in {_duration(time.monotonic() - start)}", flush=True)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _pictures(dataset, png, spb):
    os.makedirs(png, exist_ok=True)
    shown = {}
    for split in SPLITS:
        for record in iter_records(dataset, split):
            plot_roll(record.roll, os.path.join(png, f"{split}-{record.id}.png"), steps_per_beat=spb,
                      title=f"{record.id} ({split})")
            shown[f"{record.id} ({split})"] = record.roll
            break
    for record in iter_records(dataset, "train"):
        if len(shown) >= 6:
            break
        shown.setdefault(f"{record.id} (train)", record.roll)
    plot_rolls(shown, os.path.join(png, "overview.png"), steps_per_beat=spb)


def _models(out, dataset, epochs, step) -> dict:
    from .evaluate import evaluate_run
    from .run import Run
    from .train import train

    runs = {kind: os.path.join(out, "runs", kind) for kind in ("lstm", "vae")}
    for kind, run in runs.items():
        cfg = preset(kind, "tiny", epochs=epochs)
        with step(f"train {kind} (tiny preset, {cfg.epochs} epochs) -> {run}", heartbeat=True):
            if not Run(run).is_trained():
                train(kind, dataset, run, cfg)
            else:
                print(f"  {run} is already trained")
    result = {}
    with step("evaluate on the held-out test split", heartbeat=True):
        for kind, run in runs.items():
            start = time.monotonic()
            result[kind] = evaluate_run(run, dataset, "test")
            print(f"  {kind}: {_headline(result[kind])} ({_duration(time.monotonic() - start)})", flush=True)
    with step(f"extend 3 held-out prompts -> {out}/extend; generate 8 pieces -> {out}/generated",
              heartbeat=True):
        result["extend"] = _extend(runs["lstm"], dataset, os.path.join(out, "extend"))
        result["generate"] = _generate(runs["vae"], os.path.join(out, "generated"))
    return result


def _headline(scores: dict) -> str:
    """One line of a run's evaluation (:func:`musicgen.evaluate.evaluate_run`)."""
    if scores["kind"] == "lstm":
        music = scores["music"]
        clashes = (f"; continuations clash in {music['model']['clash_share']:.1%} of frames "
                   f"(the real music: {music['real']['clash_share']:.1%})" if music["pairs"] else "")
        return f"nll {scores['nll']:.3f} nats/frame, {scores['nll_vs_copy_last']:.2f} x copy_last's{clashes}"
    return (f"{scores['non_empty']} of {scores['comparison']['samples']} samples non-empty, "
            f"{sum(s['in_range'] for s in scores['comparison']['stats'].values())} of "
            f"{len(scores['comparison']['stats'])} statistics in the corpus's range")


def _extend(run, dataset, folder) -> list:
    from .generate import load_extender
    from .metrics import change_rate, pitch_class_similarity

    os.makedirs(folder, exist_ok=True)
    extender, info = load_extender(run)
    spb = info["steps_per_beat"]
    records = [r for r in iter_records(dataset, "test") if len(r.roll) >= PROMPT_STEPS][:3]
    out = []
    for i, record in enumerate(records):
        prompt = record.roll[:PROMPT_STEPS]
        continuation = extender.extend(prompt, EXTEND_STEPS, temperature=1.0, seeds=i)
        roll = np.concatenate([prompt, continuation])
        name = os.path.join(folder, f"{record.id}")
        roll_to_midi(prompt, spb, tempos=record.tempos).save(name + "-prompt.mid")
        midi = roll_to_midi(roll, spb, tempos=record.tempos)
        midi.save(name + "-extended.mid")
        write_wav(name + "-extended.wav", roll, midi, spb, tempos=record.tempos)
        plot_roll(roll, name + "-extended.png", steps_per_beat=spb, split_at=PROMPT_STEPS,
                  title=f"{record.id}: prompt (blue) + {EXTEND_STEPS} generated steps (orange)")
        truth = record.roll[PROMPT_STEPS:PROMPT_STEPS + EXTEND_STEPS]
        out.append({"piece": record.id, "change_rate": round(change_rate(prompt, continuation), 3),
                    "change_rate_of_the_real_continuation": round(change_rate(prompt, truth), 3),
                    "pitch_class_similarity_to_prompt": round(pitch_class_similarity(prompt, continuation), 3),
                    "notes_generated": int((continuation > 0).sum())})
    return out


def _generate(run, folder) -> dict:
    from .generate import load_generator

    os.makedirs(folder, exist_ok=True)
    generator, info = load_generator(run)
    spb = info["steps_per_beat"]
    rolls = generator.generate(8, seed=0)
    for i, roll in enumerate(rolls):
        midi = roll_to_midi(roll, spb)
        midi.save(os.path.join(folder, f"piece-{i:03d}.mid"))
        write_wav(os.path.join(folder, f"piece-{i:03d}.wav"), roll, midi, spb)
    plot_rolls({f"piece {i}": r for i, r in enumerate(rolls)}, os.path.join(folder, "overview.png"),
               steps_per_beat=spb)
    return {"pieces": len(rolls), "non_empty": int(sum(bool(r.any()) for r in rolls))}


def _markdown(dataset_text, result) -> str:
    lines = ["# musicgen demo", "", "## Dataset", ""] + [f"- {x}" for x in dataset_text.splitlines()]
    if "lstm" in result:
        lstm = result["lstm"]
        lines += ["", "## LSTM extender on the held-out test split", "",
                  "| model | nll (nats/frame) | accuracy | f1 | mae |", "|---|---|---|---|---|"]
        for name, s in (("lstm", lstm), ("copy_last", lstm["copy_last"]), ("pitch_prior", lstm["pitch_prior"])):
            lines.append(f"| {name} | {s['nll']:.3f} | {s['accuracy']:.3f} | {s['f1']:.3f} | {s['mae']:.4f} |")
        lines += ["", f"nll / copy_last's nll = {lstm['nll_vs_copy_last']:.3f}", "", "Continuations:", ""]
        lines += [f"- {e['piece']}: changes notes on {e['change_rate']:.0%} of steps (the real continuation: "
                  f"{e['change_rate_of_the_real_continuation']:.0%}), pitch-class similarity to the prompt "
                  f"{e['pitch_class_similarity_to_prompt']:.2f}" for e in result["extend"]]
    if "vae" in result:
        vae = result["vae"]
        lines += ["", "## VAE generator", "", f"- active latent units: {vae['active_units']} of {vae['latent']}",
                  f"- generated pieces: {result['generate']['non_empty']} of {result['generate']['pieces']} non-empty",
                  "", "| statistic | samples | corpus |", "|---|---|---|"]
        for key in ("notes_per_step", "polyphony", "silence_fraction", "pitch_range"):
            lines.append(f"| {key} | {vae['samples'][key]:.3f} | {vae['corpus'][key]:.3f} |")
    return "\n".join(lines) + "\n"
