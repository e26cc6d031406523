"""``musicgen benchmark poly``: train and evaluate on the four polyphonic benchmarks' official splits
and put the scores next to the published ones.

For each dataset: :func:`musicgen.poly.write_poly` makes the dataset, :func:`musicgen.train.train`
trains the LSTM on Ray Train (as ``musicgen train lstm``), and the test split is scored with the
functions ``musicgen evaluate`` uses (:func:`musicgen.metrics.evaluate`, the trained
:class:`~musicgen.lstm.Extender`, :class:`~musicgen.metrics.CopyLast` fitted on the train split).

The literature's convention (Boulanger-Lewandowski et al. 2012; locuslab/TCN's ``music_test.py``):
test NLL in nats per time step, summed over the 88 pitches of a frame and averaged over the frames
1..T-1 of every test sequence (all frames of all sequences pooled; frame 0 is not predicted).
``musicgen evaluate`` does exactly this over all 128 pitches of musicgen's rolls; here the scores
are taken on the 88 pitches 21..108 only (:func:`on_keyboard`), so that they are the literature's
figure exactly; ``musicgen evaluate``'s own 128-pitch figure is kept in the JSON
(``evaluate_128``): the difference is the NLL of the 40 pitches that never sound.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from .poly import DATASETS, KEYS, LOWEST
from .run import STEP_POSITIONS

# Published test NLL, nats per time step (88 pitches, frames 1..T-1), as collected in
# ../shared/data/poly-music/SOURCE.md. (model, output layer, citation, {dataset: nll}).
PUBLISHED = [
    ("RNN", "one sigmoid per pitch", "Boulanger-Lewandowski, Bengio & Vincent, ICML 2012",
     {"JSB_Chorales": 8.71, "Nottingham": 4.46, "MuseData": 8.13, "Piano_midi": 8.37}),
    ("LSTM", "one sigmoid per pitch", "Chung, Gulcehre, Cho & Bengio, 2014", {"JSB_Chorales": 8.67}),
    ("LSTM", "one sigmoid per pitch", "Bai, Kolter & Koltun, 2018", {"JSB_Chorales": 8.45, "Nottingham": 3.29}),
    ("GRU", "one sigmoid per pitch", "Bai, Kolter & Koltun, 2018", {"JSB_Chorales": 8.43, "Nottingham": 3.46}),
    ("TCN", "one sigmoid per pitch", "Bai, Kolter & Koltun, 2018", {"JSB_Chorales": 8.10, "Nottingham": 3.07}),
    ("RNN-RBM", "frame modelled jointly", "Boulanger-Lewandowski, Bengio & Vincent, ICML 2012",
     {"JSB_Chorales": 6.27, "Nottingham": 2.39}),
    ("RNN-NADE (Hessian-free)", "frame modelled jointly", "Boulanger-Lewandowski, Bengio & Vincent, ICML 2012",
     {"JSB_Chorales": 5.19, "Nottingham": 2.31, "MuseData": 5.60, "Piano_midi": 7.05}),
    ("DMM-Aug-NADE", "frame modelled jointly", "Krishnan, Shalit & Sontag, AAAI 2017",
     {"JSB_Chorales": 5.12, "Nottingham": 2.31, "MuseData": 6.05, "Piano_midi": 7.05}),
]

POSITION_NOTE = ("Bar positions (the LSTM's position input): `meter`, each piece's bars on the dataset's grid "
                 "(these files carry no time signatures, so 4/4: bars of 4 steps at JSB's 1 step per beat, of 8 at "
                 "the others' 2); `steps`, bars of 16 steps counted from each piece's start (runs trained before "
                 "datasets held time signatures), which on these grids are not the bars.")


def parse_datasets(text: str) -> list[str]:
    """'JSB_Chorales,Nottingham' -> canonical names; DataError naming an unknown one."""
    from .poly import dataset_info

    names = [dataset_info(n.strip()).name for n in str(text).split(",") if n.strip()]
    if not names:
        from .errors import ArgumentError

        raise ArgumentError("--datasets", text, f"a comma-separated list of {', '.join(DATASETS)}")
    return list(dict.fromkeys(names))


def on_keyboard(predict):
    """A 128-pitch next-frame predictor as one over the 88 keys (pitches 21..108): it takes and
    returns (T, 88) arrays, so that :func:`musicgen.metrics.evaluate` sums over the 88 pitches."""
    def predict88(keys: np.ndarray, *positions) -> np.ndarray:
        full = np.zeros((len(keys), 128), np.float32)
        full[:, LOWEST:LOWEST + KEYS] = keys
        return np.asarray(predict(full, *positions))[:, LOWEST:LOWEST + KEYS]
    return predict88


def score_run(run: str, data: str, threshold: float = 0.5) -> dict:
    """Test-split scores of a trained LSTM run and of ``copy_last`` on the 88 keys, plus
    ``musicgen evaluate``'s own 128-pitch result (``evaluate_128``)."""
    from .dataset import iter_records, load_rolls
    from .evaluate import _rounded, decider, evaluate_run
    from .generate import load_extender
    from .metrics import CopyLast, evaluate

    extender, info = load_extender(run)
    cfg = extender.cfg
    test = list(iter_records(data, "test"))
    keys = [r.roll[:, LOWEST:LOWEST + KEYS] for r in test]
    positions = [extender.positions(len(r.roll), r.time_signatures) for r in test]
    copy_last = CopyLast().fit(load_rolls(data, "train").values())
    full = evaluate_run(run, data, "test", threshold=threshold)
    decide = decider(extender, threshold)
    model = evaluate(on_keyboard(extender.predict_next), keys, threshold, decide and on_keyboard(decide), positions)
    nade = cfg.head == "nade"
    return {"head": cfg.head, "nade_changes": nade and cfg.nade_changes,
            "nade_neighbours": cfg.nade_neighbours if nade else 0,
            "nade_pitch_classes": nade and cfg.nade_pitch_classes, "nade_beat": list(cfg.nade_beat) if nade else [],
            "bar_positions": info.get("bar_positions", STEP_POSITIONS), "model": _rounded(model),
            "copy_last": _rounded(evaluate(on_keyboard(copy_last.predict), keys, threshold)),
            "evaluate_128": {k: full[k] for k in ("nll", "accuracy", "frames")} | {
                "copy_last_nll": full["copy_last"]["nll"]}, "music": full["music"]}


def run_poly(datasets, src: str, out: str, *, presets=("joint",), epochs: int | None = None,
             workers: int = 1, seed: int = 0, progress: bool = True) -> dict:
    """Benchmark each dataset with each LSTM preset: dataset under ``out/NAME/dataset``, runs under
    ``out/NAME/PRESET`` (a finished one is reused, an unfinished one resumed), scores; writes ``out/poly.md`` and
    ``out/poly.json`` after each run and returns the results."""
    from .config import preset as make_preset
    from .errors import DataError
    from .poly import mat_path

    names = parse_datasets(",".join(datasets))
    presets = list(dict.fromkeys(presets))
    if not os.path.isdir(src):
        raise DataError(f"{src}: not a folder (--from takes the folder holding the NAME.mat files)")
    for name in names:  # every file before any training: a missing one fails now, not an hour later
        mat_path(name, src)
    cfgs = {p: make_preset("lstm", p, epochs=epochs) for p in presets}
    results = {"presets": presets, "epochs": epochs, "seed": seed, "workers": workers,
               "datasets": _earlier(out, names, presets), "note": POSITION_NOTE}
    for name in names:
        for p, cfg in cfgs.items():
            results["datasets"].setdefault(name, {})[p] = _bench_one(name, src, out, p, cfg, workers, seed, progress)
            write_table(results, out)
    return results


def _bench_one(name: str, src: str, out: str, preset: str, cfg, workers: int, seed: int, progress: bool) -> dict:
    """Make (or reuse) dataset ``name``, train (or reuse) the run of ``preset``, score it."""
    from .dataset import read_manifest
    from .errors import DataError
    from .poly import write_poly
    from .run import Run
    from .train import train

    data, run = os.path.join(out, name, "dataset"), os.path.join(out, name, preset)
    start = time.perf_counter()
    try:
        read_manifest(data)
    except DataError:
        write_poly(name, data, src, overwrite=True)
    made = time.perf_counter()
    reused, resumed = Run(run).is_trained(), Run(run).has_checkpoints()
    if not reused:  # an interrupted run (Ctrl+C, a lost node) goes on from its last checkpoint
        train("lstm", data, run, cfg, workers=workers, seed=seed, resume=resumed, progress=progress)
    trained = time.perf_counter()
    scores = score_run(run, data)
    done = time.perf_counter()
    with open(os.path.join(run, "metrics.json")) as f:
        epochs_run = json.load(f).get("epochs")
    return {**scores, "epochs": epochs_run, "data": data, "run": run, "reused_run": reused,
            "resumed_run": resumed and not reused,
            "seconds": {"dataset": round(made - start, 1), "train": round(trained - made, 1),
                        "evaluate": round(done - trained, 1), "total": round(done - start, 1)}}


def _earlier(out: str, names: list[str], presets: list[str]) -> dict:
    """Results of other datasets or presets from an earlier ``run_poly`` into ``out`` (run still
    there), so that datasets and presets benchmarked one at a time end up in one table."""
    try:
        with open(os.path.join(out, "poly.json")) as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return {}
    kept = {}
    for name, runs in earlier.get("datasets", {}).items():
        for p, r in runs.items() if name in DATASETS else ():
            if not (name in names and p in presets) and os.path.isfile(os.path.join(r.get("run", ""), "metrics.json")):
                kept.setdefault(name, {})[p] = r
    return kept


HEAD_LABEL = {"nade": "frame modelled jointly (NADE)", "factorized": "one sigmoid per pitch"}


def _nade_terms(run: dict) -> str:
    """What a NADE head reads beyond the plain RNN-NADE, for the table's output column."""
    terms = (["the frame's changes"] if run.get("nade_changes") else []) + (
        [f"its neighbours (+-{run['nade_neighbours']} semitones)"] if run.get("nade_neighbours") else []) + (
        ["their pitch classes"] if run.get("nade_pitch_classes") else []) + (
        [f"apart every {'/'.join(map(str, run['nade_beat']))} steps"] if run.get("nade_beat") else [])
    return ", reading " + " and ".join(terms) if terms else ""


def markdown(results: dict) -> str:
    """The table: test NLL (nats per frame, 88 pitches) of each preset's run and ``copy_last`` next
    to the published figures, then frame accuracy, clash share and times."""
    ours = results["datasets"]
    names = [n for n in DATASETS if n in ours] or list(DATASETS)
    presets = list(dict.fromkeys(p for n in names for p in ours.get(n, {})))
    cols = [DATASETS[n].title for n in names]

    def cell(v, fmt="{:.2f}"):
        return fmt.format(v) if v is not None else ""

    lines = ["Test NLL, nats per frame (summed over the 88 pitches, averaged over frames 1..T-1 of every "
             "test sequence; lower is better).", "",
             "| model | output | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for p in presets:
        run = next((ours[n][p] for n in names if p in ours.get(n, {})), {})
        head = run.get("head", "factorized")
        label = HEAD_LABEL.get(head, head) + _nade_terms(run)
        lines.append(f"| **musicgen LSTM `{p}` (this run)** | {label} | "
                     + " | ".join(f"**{cell(ours[n][p]['model']['nll'])}**" if p in ours.get(n, {}) else ""
                                  for n in names) + " |")
    copy_last = {n: next(iter(ours[n].values()))["copy_last"]["nll"] for n in names if ours.get(n)}
    lines.append("| `copy_last` baseline (this run) | one Bernoulli per pitch | "
                 + " | ".join(cell(copy_last.get(n)) for n in names) + " |")
    for model, output, cite, figures in PUBLISHED:
        lines.append(f"| {model} ({cite}) | {output} | " + " | ".join(cell(figures.get(n)) for n in names) + " |")
    lines += ["", "| dataset | preset | frame accuracy | `copy_last` | clash share: model / real | epochs | "
              "bar positions | test frames | wall s (dataset / train / evaluate) |",
              "|---|---|---:|---:|---|---:|---|---:|---|"]
    for n in names:
        for p, r in ours.get(n, {}).items():
            s, m = r["seconds"], r.get("music", {})
            clash = (f"{m['model']['clash_share']:.3f} / {m['real']['clash_share']:.3f}"
                     if m.get("pairs") else "")
            lines.append(f"| {DATASETS[n].title} | `{p}` | {r['model']['accuracy']:.3f} | "
                         f"{r['copy_last']['accuracy']:.3f} | {clash} | {r['epochs']}{' (resumed)' if r.get('resumed_run') else ''} | "
                         f"{r.get('bar_positions', STEP_POSITIONS)} | {r['model']['frames']} | "
                         f"{s['total']:.0f} ({s['dataset']:.0f} / {s['train']:.0f} / {s['evaluate']:.0f}) |")
    lines += ["", "Frame accuracy: Bay et al.'s TP / (TP + FP + FN), counts pooled over all test frames; the "
              "factorized head's probabilities are thresholded at 0.5, the NADE head decides each frame pitch by "
              "pitch from the lowest, each pitch on when its conditional given the decisions below reaches 0.5 "
              "(the published accuracies are expectations under the model, so they are not compared here). "
              "Clash share: the share of sounding frames holding two pitch classes a semitone apart, in the "
              "continuations of held-out prompts (`musicgen evaluate`'s music section) and in the real "
              "continuations.", "", results.get("note", POSITION_NOTE)]
    return "\n".join(lines) + "\n"


def write_table(results: dict, out: str) -> tuple[str, str]:
    """Write ``out/poly.md`` and ``out/poly.json`` (results and the published figures with their
    citations); returns their paths."""
    os.makedirs(out, exist_ok=True)
    md, js = os.path.join(out, "poly.md"), os.path.join(out, "poly.json")
    with open(md, "w") as f:
        f.write(markdown(results))
    published = [{"model": m, "output": o, "citation": c, "nll": figs} for m, o, c, figs in PUBLISHED]
    with open(js, "w") as f:
        json.dump({**results, "published": published}, f, indent=1)
    return md, js
