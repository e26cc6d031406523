"""musicgen.config: presets, overrides, range checks, and the dict round trip that carries a config
into Ray Train, Ray Tune and a run's config.json."""
import dataclasses
import json

import pytest

from musicgen.config import PRESETS, LSTMConfig, VAEConfig, from_dict, preset, to_dict
from musicgen.errors import DataError


def test_every_preset_passes_its_own_checks():
    for kind, presets in PRESETS.items():
        for name, cfg in presets.items():
            assert preset(kind, name) == cfg.check(), (kind, name)


def test_overrides_replace_fields_and_none_keeps_the_preset():
    cfg = preset("lstm", "tiny", units=64, epochs=None)
    assert cfg.units == 64 and cfg.epochs == PRESETS["lstm"]["tiny"].epochs
    assert PRESETS["lstm"]["tiny"].units == 256  # the table itself is untouched
    vae = preset("vae", "tiny", latent=8)
    assert isinstance(vae, VAEConfig) and vae.latent == 8 and vae.height == 64


@pytest.mark.parametrize("kind, name, overrides, match", [
    ("gan", "tiny", {}, "model kind"),
    ("lstm", "huge", {}, "preset must be one of tiny, joint, factorized, paper"),
    ("lstm", "tiny", {"colour": "red"}, "unknown lstm setting"),
    ("lstm", "tiny", {"layers": 4}, "layers must be between 1 and 3"),
    ("lstm", "tiny", {"dropout": 0.99}, "dropout"),
    ("vae", "tiny", {"loss": "l1"}, "loss must be"),
    ("vae", "tiny", {"decoding": "beam"}, "decoding must be"),
    ("vae", "tiny", {"decode_block": 3}, "must divide height"),
    ("vae", "tiny", {"decode_min_share": 1.5}, "decode_min_share"),
    ("vae", "tiny", {"height": 16}, "height must be between 32"),
])
def test_bad_settings_are_data_errors_naming_the_setting(kind, name, overrides, match):
    with pytest.raises(DataError, match=match):
        preset(kind, name, **overrides)


def test_dict_round_trip_through_json():
    for kind in ("lstm", "vae"):
        for name in PRESETS[kind]:
            cfg = preset(kind, name)
            back = from_dict(kind, json.loads(json.dumps(to_dict(cfg))))
            assert back == cfg and type(back) is type(cfg)
    # JSON turns the filters tuple into a list; from_dict turns it back, so configs compare equal
    assert from_dict("vae", {"filters": [8, 8, 8]}).filters == (8, 8, 8)


def test_from_dict_ignores_unknown_keys_and_checks_values():
    # a run written by a newer version may carry settings this one does not know
    assert from_dict("lstm", {"units": 32, "added_later": 1}) == dataclasses.replace(LSTMConfig(), units=32)
    with pytest.raises(DataError, match="units"):
        from_dict("lstm", {"units": 0})
