"""What a new user of ``raco-jax`` sees: one clear line per error (exit 2), helpful --help."""

from __future__ import annotations

import json

import pytest

from raco_jax.cli import build_parser, main


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    status = main(argv)
    err = capsys.readouterr().err
    return status, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("raco-jax: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_align_without_arguments_names_the_required_flags(capsys) -> None:
    status, err = _run(capsys, ["align"])
    line = _one_line_error(err)
    assert status == 2
    assert "missing required settings: --model" in line and "--dataset" in line


def test_a_missing_gguf_file_is_one_line_and_exit_2(capsys, tmp_path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    missing = tmp_path / "nope.gguf"
    status, err = _run(capsys, ["align", "--model", str(missing), "--dataset", str(data),
                                "--objectives", "helpful", "--quiet"])  # fmt: skip
    assert status == 2
    assert _one_line_error(err) == f"raco-jax: error: model: GGUF file not found: {missing}"


def test_a_missing_model_directory_is_one_line_and_exit_2(capsys, tmp_path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    missing = tmp_path / "no-such-model"
    status, err = _run(capsys, ["align", "--model", str(missing), "--dataset", str(data),
                                "--objectives", "helpful", "--quiet"])  # fmt: skip
    assert status == 2
    line = _one_line_error(err)
    assert line.startswith(f"raco-jax: error: model: no such file or directory: {missing}")


@pytest.mark.parametrize(
    "content, where",
    [("", "empty"), ('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": \n', "line 2")],
)
def test_bad_dataset_files_are_one_line_naming_the_file(capsys, tmp_path, content, where) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(content)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")  # never read: the data fails first
    status, err = _run(capsys, ["align", "--model", str(model), "--dataset", str(data),
                                "--objectives", "helpful", "--quiet"])  # fmt: skip
    line = _one_line_error(err)
    assert status == 2 and str(data) in line and where in line


def test_align_help_documents_every_flag(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["align", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in (
        "--method {raco,cagrad,dpo-lw,mgda,pcgrad,dpo,amopo,modpo}",
        "--reference {precomputed,online,lora_base,none}",
        "--aggregate-at {batch,micro_batch}",
        "--export-lora {merged,adapter}",
        "registered: pku-saferlhf",
        "a directory of such files",
        "CAGrad radius",
        "(default: 0.4)",
        "(default: required)",
    ):
        assert fragment in text, fragment
    assert "(default: " in text and text.count("(default:") >= 40


def test_help_of_every_command(capsys) -> None:
    for command in ("demo", "toy", "align", "sweep", "evaluate"):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args([command, "--help"])
        assert info.value.code == 0
    assert "--max-pairs" in capsys.readouterr().out
