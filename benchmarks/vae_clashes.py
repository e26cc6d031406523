"""Whose clashes are a VAE's samples': the decoder's, or the prior's holes?

    python benchmarks/vae_clashes.py RUN DATASET [--split test] [--seed 0]

For each image of the split (``musicgen.vae.images``), one piece drawn at temperature 1 by the
run's lstm decoder (``Generator.sample``, row i from seed i) from each of three codes: z ~ N(0, I)
(the prior samples ``generate`` gives, as many as there are images, where ``evaluate`` draws 32),
the image's z_mean, and z ~ q(z | x). A frame *clashes* when two of its pitch classes are a
semitone apart (``musicgen.metrics.pooled_clash_share``); each figure is the pooled share of
sounding frames and its ratio to the split's images, with the pieces' polyphony (pitches per
sounding frame). Pieces drawn from the images' own codes that clash as often as the prior's
show a decoder that clashes; the difference is what the prior's holes add. Prints one JSON object.
"""
import argparse
import json

import numpy as np

from musicgen.dataset import iter_records
from musicgen.generate import load_generator
from musicgen.metrics import pooled_clash_share
from musicgen.vae import images


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0, help="the draws of z (pieces: seeds 0 .. n-1)")
    args = ap.parse_args()
    gen, _ = load_generator(args.run)
    if not gen.autoregressive:
        raise SystemExit(f"{args.run}: a convolutional decoder draws no pieces from z alone; this needs decoder='lstm'")
    x = np.concatenate([images(r.roll, gen.cfg) for r in iter_records(args.data, args.split)])
    rng = np.random.default_rng(args.seed)
    mean, log_var = (t.numpy() for t in gen.model.encoder(x, training=False)[:2])
    codes = {"prior": rng.standard_normal(mean.shape).astype(np.float32), "z_mean": mean,
             "posterior": (mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)).astype(np.float32)}
    real = x[..., 0] > 0
    corpus = pooled_clash_share(list(real))
    out = {"run": args.run, "split": args.split, "images": len(x), "corpus": {
        "clash": round(corpus, 4), "polyphony": round(float(real.sum(-1)[real.any(-1)].mean()), 3)}}
    for name, z in codes.items():
        pieces = gen.sample(z, np.arange(len(z)), 1.0)
        clash = pooled_clash_share(list(pieces))
        out[name] = {"clash": round(clash, 4), "ratio": round(clash / corpus, 3),
                     "polyphony": round(float(pieces.sum(-1)[pieces.any(-1)].mean()), 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
