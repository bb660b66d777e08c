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
