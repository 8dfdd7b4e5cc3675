"""Run the bash blocks of every docs/examples/NN_*/README.md in a copy of its folder (docs cannot drift)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("[0-9][0-9]_*"))


def _bash_blocks(readme: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_readme_runs(example: Path, tmp_path: Path) -> None:
    work = tmp_path / example.name
    shutil.copytree(example, work)
    # The scripts import the tiny-model builders from the repository: PYTHONPATH points there from the copy.
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    for block in _bash_blocks(example / "README.md"):
        script = block.replace("python ", f"{sys.executable} ")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (
            f"{example.name}:\n{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
