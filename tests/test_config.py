"""kerasface.config (one schema, validated from its metadata), kerasface.presets (data), upgrade_settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from kerasface.config import (
    AUGMENTATIONS,
    ClassifyExperiment,
    PairExperiment,
    TripletExperiment,
    is_setting_default,
    setting_info,
    upgrade_settings,
)
from kerasface.presets import CLASSIFY_PRESETS, PAIR_PRESETS, PRESET_REPORTS, TRIPLET_PRESETS, preset_report

SCHEMAS = (PairExperiment, TripletExperiment, ClassifyExperiment)
FIXTURES = Path(__file__).parent / "fixtures"

# config.json of `kerasface train` (preset vargface) as the code on main writes it: the preset's settings,
# the resolved data and pair lists, and the runtime (not compared on resume)
MAIN_PAIR_CONFIG = {
    "name": "vargface", "description": "", "backbone": "vargfacenet", "data": "/data/lfw_sample",
    "train_pairs": "/data/lfw_sample/pairsTrain.txt", "val_pairs": "/data/lfw_sample/pairsVal.txt",
    "image_size": 112, "center_crop": 1.0, "low_light": False, "low_light_seed": 1234, "augment": False,
    "on_missing": "skip", "on_error": "skip", "hidden_units": 64, "dropout": 0.5, "group_conv": "auto",
    "epochs": 20, "batch_size": 32, "learning_rate": 0.001, "seed": 0, "verify_every": 0, "out": "runs",
    "runtime": {"strategy": "default", "mixed_precision": "off", "jit_compile": False, "policy": "float32"},
}


def test_every_field_has_help_and_a_valid_default():
    for schema in SCHEMAS:
        for f in dataclasses.fields(schema):
            info = setting_info(f)
            assert info.help.strip(), (schema.__name__, f.name)
            if f.default is not dataclasses.MISSING and f.default is not None:
                if info.choices:
                    assert f.default in info.choices, (schema.__name__, f.name)
                assert not info.describe_range() or info.in_range(f.default), (schema.__name__, f.name)


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("field, bad", [("epochs", 0), ("batch_size", 0), ("image_size", 0), ("learning_rate", 0.0),
                                        ("center_crop", 0.0), ("center_crop", 1.5), ("on_error", "ignore")])
def test_ranges_and_choices_are_checked_for_every_schema(schema, field, bad):
    with pytest.raises(ValueError, match=field):
        schema(name="x", **{field: bad})


def test_pair_checks_and_deprecated_values():
    for bad in ({"dropout": 1.0}, {"hidden_units": 0}, {"augment": "jitter"}, {"group_conv": "fast"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PairExperiment(name="x", **bad)
    with pytest.warns(DeprecationWarning, match="augment"):
        assert PairExperiment(name="x", augment=True).augment == "flip"
    with pytest.warns(DeprecationWarning, match="report002"):
        assert ClassifyExperiment(name="x", objective="report002").objective == "distillation"
    with pytest.raises(ValueError, match="objective distillation"):
        ClassifyExperiment(name="x", teacher="t")


def test_augmentation_names_match_the_registry():
    augment = pytest.importorskip("kerasface.data.augment")
    assert augment.AUGMENTATIONS == AUGMENTATIONS


def test_loss_form_choices_match_the_losses():
    from kerasface.losses.center import CENTER_UPDATES
    from kerasface.losses.distillation import EMBEDDING_L2_REDUCTIONS, SOFT_CE_KINDS
    from kerasface.models.distillation import LOSS_SUMS

    fields = {f.name: setting_info(f).choices for f in dataclasses.fields(ClassifyExperiment)}
    assert fields["center_update"] == CENTER_UPDATES and fields["soft_ce_kind"] == SOFT_CE_KINDS
    assert fields["embedding_l2_reduction"] == EMBEDDING_L2_REDUCTIONS and fields["loss_sum"] == LOSS_SUMS
    with pytest.raises(ValueError, match="pick one"):
        ClassifyExperiment(name="x", objective="distillation", hard_mining_fraction=0.5, hard_mining_threshold=0.7)


def test_runtime_choices_match_the_training_runtime():
    from kerasface.cli.flags import PRECISIONS, STRATEGIES
    from kerasface.training import distribute

    assert (STRATEGIES, PRECISIONS) == (distribute.STRATEGIES, distribute.PRECISIONS)


#: settings added after the main-era fixtures were written, off (None) by default; an old run folder lacks them
#: and resuming reads them as None (run_folder compares with ``dict.get``)
ADDED_SINCE_MAIN_ERA = {"pairs": ("holdout_folds", "init_from", "freeze_backbone"),
                        "classify": ("embedding_teacher", "teacher_data", "embedding_distill_weight",
                                     "embedding_distill_metric", "flip")}


def test_upgrade_settings_maps_a_main_era_pair_run_folder():
    new = upgrade_settings(MAIN_PAIR_CONFIG)
    cfg = PairExperiment(name="vargface")
    # what the pair trainer resolves today for the same command (its comparison ignores the key order)
    today = cfg.to_dict() | {k: MAIN_PAIR_CONFIG[k] for k in ("data", "train_pairs", "runtime")} \
        | {"eval_pairs": MAIN_PAIR_CONFIG["val_pairs"]}
    # settings added since (off by default) are absent from the old file; resume takes them at their defaults
    added = set(ADDED_SINCE_MAIN_ERA["pairs"])
    assert all(is_setting_default(k, today.pop(k)) for k in added) and not added & set(new)
    assert new == today
    assert upgrade_settings(dict(MAIN_PAIR_CONFIG, augment=True))["augment"] == "flip"
    assert MAIN_PAIR_CONFIG["val_pairs"] and MAIN_PAIR_CONFIG["augment"] is False  # the input is left alone
    assert upgrade_settings(new) == new  # today's spelling stays


# presets re-read against their sources (issue 19: report 002's code, report 001's crop-only augmentation, ...)
CHANGED_SINCE_MAIN_ERA = {"facenet-nn2", "incres-teacher", "sqnxt23v5-1.0", "sqnxt23v5-1.0-ts", "sqnxt23v5-2.0",
                          "sqnxt23v5-2.0-ts"}
CHANGED_SINCE_MAIN_ERA |= {n for n in CLASSIFY_PRESETS if n.startswith("thinresnet")}  # crop only, not crop + jitter
CHANGED_SINCE_MAIN_ERA |= {n for n in CLASSIFY_PRESETS if n.startswith("resnet34")}  # the fixed 6x set


def test_upgrade_settings_maps_every_main_era_preset():
    """Each preset's settings as main writes them (tests/fixtures/main_era_presets.json) upgrade to today's."""
    old = json.loads((FIXTURES / "main_era_presets.json").read_text())
    tables = {"pairs": PAIR_PRESETS, "triplet": TRIPLET_PRESETS, "classify": CLASSIFY_PRESETS}
    assert all(set(v) <= set(tables[k]) for k, v in old.items())  # every old preset still exists
    for kind, presets in old.items():
        for name, settings in presets.items():
            new, today = upgrade_settings(settings), json.loads(json.dumps(tables[kind][name].to_dict()))
            assert set(new) <= set(today), name  # only today's names (settings added since take defaults)
            if name in CHANGED_SINCE_MAIN_ERA:  # the preset itself changed: the renamed keys still map
                assert all(new[k] == today[k] for k in ("objective", "name") if k in new), name
            else:
                assert new == {k: today[k] for k in new}, name
    assert old["classify"]["sqnxt23v5-1.0-ts"]["objective"] == "report002"


def test_presets_carry_their_report_figures():
    assert set(PRESET_REPORTS) == {*PAIR_PRESETS, *TRIPLET_PRESETS, *CLASSIFY_PRESETS}
    assert preset_report("vargface") == {"report": "000", "val_accuracy": 0.789, "val_loss": 0.469}
    assert preset_report("thinresnet50v2-angproto-m2")["validation_eer_percent"] == 3.854
    assert preset_report("incres-teacher")["validation_accuracy_percent"] == 88.91
    assert "88.91 %" in CLASSIFY_PRESETS["incres-teacher"].description
    assert preset_report("facenet-nn2-cpu") == {}
    with pytest.raises(ValueError, match="unknown preset"):
        preset_report("nope")
