"""AlignConfig: files, flags, presets, and clear errors before anything is compiled."""

from __future__ import annotations

import pytest

from raco_jax.train.config import (
    PRESETS,
    AlignConfig,
    config_from_args,
    config_from_mapping,
    resolve_mesh_shape,
    validate_config,
)

GOOD = {"model": "m", "dataset": "d", "objectives": ("helpful", "harmless"), "weights": (0.7, 0.3)}


def test_file_then_flags_override(tmp_path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        "preset: paper-safety\nmodel: some/model\nweights: [0.6, 0.4]\nlearning-rate: 2.0e-6\n"
    )
    cfg = config_from_args(["--config", str(yaml_file), "--c", "0.3", "--remat"])
    assert cfg.model == "some/model" and cfg.weights == (0.6, 0.4)
    assert cfg.learning_rate == 2e-6 and cfg.c == 0.3 and cfg.remat is True
    assert cfg.beta == PRESETS["paper-safety"]["beta"] == 0.2
    toml_file = tmp_path / "run.toml"
    toml_file.write_text('method = "dpo-lw"\nobjectives = ["a", "b", "c"]\nmesh = [2, 2, 2]\n')
    cfg = config_from_args(["--config", str(toml_file), "--objectives", "x,y"])
    assert cfg.method == "dpo-lw" and cfg.objectives == ("x", "y") and cfg.mesh == (2, 2, 2)


def test_paper_preset_matches_the_recipe() -> None:
    cfg = config_from_mapping({"preset": "paper-reddit"})
    assert (cfg.c, cfg.beta, cfg.batch_size, cfg.max_length, cfg.max_prompt_length) == (
        0.4,
        0.2,
        64,
        2048,
        1536,
    )
    assert (cfg.schedule, cfg.warmup_ratio, cfg.max_grad_norm, cfg.dtype) == (
        "cosine",
        0.1,
        1.0,
        "bfloat16",
    )
    assert cfg.lora_rank == 0  # full fine-tuning


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "dpo++"}, "unknown method"),
        ({"weights": (0.5, 0.3, 0.2)}, "weights has 3 entries"),
        ({"weights": (0.5, 0.6)}, "sum to 1"),
        ({"weights": (1.2, -0.2)}, "non-negative"),
        ({"c": 1.0}, "c must be in"),
        ({"batch_size": 10, "micro_batches": 4}, "not divisible"),
        ({"max_prompt_length": 4096}, "max_prompt_length"),
        ({"objectives": ("a", "a")}, "distinct"),
        ({"model": ""}, "model is required"),
    ],
)
def test_bad_configs_fail_before_compilation(changes, message) -> None:
    cfg = config_from_mapping({**GOOD, **changes})
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)


def test_schema_objectives_and_mesh_are_checked() -> None:
    cfg = config_from_mapping(GOOD)
    with pytest.raises(ValueError, match="not provided by schema"):
        validate_config(cfg, schema_objectives=("helpful", "honest"))
    with pytest.raises(ValueError, match="does not divide"):
        validate_config(cfg.replace(mesh=(3, -1, 1)), num_devices=8)
    with pytest.raises(ValueError, match="uses 4 devices"):
        validate_config(cfg.replace(mesh=(2, 2, 1)), num_devices=8)
    assert resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
    validate_config(cfg, num_devices=8, schema_objectives=("helpful", "harmless"))


def test_unknown_fields_and_bad_values_name_the_field() -> None:
    with pytest.raises(ValueError, match="unknown config field"):
        config_from_mapping({"learning_rat": 1e-5})
    with pytest.raises(ValueError, match="'batch_size'"):
        config_from_mapping({"batch_size": "many"})
    assert AlignConfig().to_dict()["lora_targets"][0] == "q_proj"


def test_modpo_and_evaluation_fields_are_checked() -> None:
    modpo = config_from_mapping({**GOOD, "method": "modpo", "margin_models": "m1"})
    assert validate_config(modpo).margin_models == ("m1",)
    with pytest.raises(ValueError, match="one margin reward model per objective"):
        validate_config(modpo.replace(margin_models=()))
    with pytest.raises(ValueError, match="modpo_target 'x' is not one of the objectives"):
        validate_config(modpo.replace(modpo_target="x"))
    with pytest.raises(ValueError, match="needs held-out pairs"):
        validate_config(config_from_mapping({**GOOD, "eval_every": 10}))
    assert validate_config(config_from_mapping({**GOOD, "eval_every": 10, "eval_fraction": 0.1}))
    with pytest.raises(ValueError, match="time_chunk_size must be >= 1"):
        validate_config(config_from_mapping({**GOOD, "time_chunk_size": 0}))
    assert config_from_args(["--time-chunk-size", "256"]).time_chunk_size == 256
