"""The README's commands and quick start are real: .ci/run calls the test command, the snippet runs."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    bash = _blocks("bash")
    assert len(bash) >= 2, "the README must state the main-job and the test commands"
    test_command = bash[1].strip()
    assert "pytest" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_quick_start_snippet_runs(capsys) -> None:
    python = _blocks("python")
    assert python, "the README must contain the optax quick start"
    namespace: dict = {}
    exec(compile(python[0], "README.md", "exec"), namespace)
    params = namespace["params"]
    assert set(params) == {"w", "b"}
    state = namespace["state"]
    assert state[0].diagnostics.coefficients.shape == (2,)
    assert capsys.readouterr().out.strip()


def test_cpu_alignment_example_runs_as_written(tmp_path, shared_dir) -> None:
    """The README's offline CPU example, command for command (real SmolLM2 weights, real
    HH-RLHF pairs): align, then evaluate; the adapters name the hub base model for PEFT."""
    import json
    import os
    import subprocess

    block = README.split("<!-- cpu-example -->", 1)[1]
    commands = re.findall(r"```bash\n(.*?)```", block, flags=re.S)[0]
    commands = commands.replace("../shared", str(shared_dir))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("XLA_FLAGS", None)  # a user's machine: its real device(s), not 8 simulated ones
    done = subprocess.run(
        ["bash", "-e", "-c", commands], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = json.loads((tmp_path / "runs/cpu-smollm2/final/adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    scores = json.loads((tmp_path / "runs/cpu-eval/preferences.json").read_text())
    assert scores["base"]["pairs/helpful"] > 0 and scores["base"]["pairs/harmless"] > 0
    assert scores["base"]["pairs/helpful"] + scores["base"]["pairs/harmless"] == 16
