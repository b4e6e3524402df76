"""``./run``'s choice of interpreter for a new .venv (``./run python`` prints it, making nothing).

The candidates here are stand-ins: shell scripts that answer the two snippets ``./run`` sends
(the version-and-venv check, and the timing workload) as a real interpreter would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def interpreter(
    directory: Path, name: str, us_per_call: str, *, usable: bool = True, version: str = "3.11"
) -> Path:
    """A stand-in python: ``-c CHECK`` prints its real path and version (or fails, as a 3.10 or
    one without venv would), ``-c WORKLOAD`` prints ``us_per_call`` (a number, or shell text
    that prints one: its timings may then vary from run to run)."""
    path = directory / name
    check = f'echo "{path} {version}"' if usable else "echo 'AssertionError' >&2; exit 1"
    path.write_text(
        "#!/bin/sh\n"
        'case "$2" in\n'
        f"  *ensurepip*) {check} ;;\n"
        f"  *perf_counter*) echo {us_per_call} ;;\n"
        "  *) exit 3 ;;\n"
        "esac\n"
    )
    path.chmod(0o755)
    return path


def run_python(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PYTHON_CANDIDATES")}
    return subprocess.run(
        ["bash", str(ROOT / "run"), "python"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_fastest_usable_candidate_is_chosen_and_every_timing_shown(tmp_path: Path) -> None:
    slow = interpreter(tmp_path, "slow", "1.30")
    fast = interpreter(tmp_path, "fast", "0.90")
    old = interpreter(tmp_path, "old", "0.10", usable=False)  # fastest, but fails the check
    result = run_python(PYTHON_CANDIDATES=f"{slow} {old} {fast}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(fast)
    assert f"{slow}: 1.30 us" in result.stderr
    assert f"{fast}: 0.90 us" in result.stderr
    assert str(old) not in result.stderr


def test_each_candidate_counts_its_fastest_run(tmp_path: Path) -> None:
    # the machine's speed swings: "spiky" is slow in all but one of its nine runs, and that one
    # (the fifth) is the fastest of all; one run, or the last, would pick "steady"
    counter = tmp_path / "runs"
    counter.write_text("0")
    spiky = interpreter(
        tmp_path,
        "spiky",
        f"$(n=$(($(cat {counter}) + 1)); echo $n > {counter}; "
        "[ $n = 5 ] && echo 0.80 || echo 2.00)",
    )
    steady = interpreter(tmp_path, "steady", "1.00")
    result = run_python(PYTHON_CANDIDATES=f"{spiky} {steady}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(spiky)
    assert f"{spiky}: 0.80 us" in result.stderr


def test_only_builds_of_the_first_candidates_version_compete(tmp_path: Path) -> None:
    first = interpreter(tmp_path, "python3", "1.30", version="3.12")
    other_version = interpreter(tmp_path, "system", "0.90", version="3.13")  # its wheels may differ
    same_version = interpreter(tmp_path, "local", "1.10", version="3.12")
    result = run_python(PYTHON_CANDIDATES=f"{first} {other_version} {same_version}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(same_version)
    assert str(other_version) not in result.stderr


def test_one_interpreter_reached_by_two_names_is_timed_once(tmp_path: Path) -> None:
    only = interpreter(tmp_path, "python3", "1.00")
    (tmp_path / "python3.11").symlink_to(only)  # the same real path: the same interpreter
    result = run_python(PYTHON_CANDIDATES=f"{only} {tmp_path / 'python3.11'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(only)
    assert "timing workload" not in result.stderr  # nothing to compare


def test_python_names_the_interpreter_and_nothing_is_timed(tmp_path: Path) -> None:
    chosen = interpreter(tmp_path, "chosen", "5.00")
    fast = interpreter(tmp_path, "fast", "0.50")
    result = run_python(PYTHON=str(chosen), PYTHON_CANDIDATES=f"{fast} {chosen}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(chosen)
    assert "timing workload" not in result.stderr


@pytest.mark.parametrize("variable", ["PYTHON", "PYTHON_CANDIDATES"])
def test_no_usable_interpreter_is_a_clear_error(tmp_path: Path, variable: str) -> None:
    old = interpreter(tmp_path, "python3.10", "1.00", usable=False)
    result = run_python(**{variable: str(old)})
    assert result.returncode == 2
    assert "no Python 3.11+ with the venv and ensurepip modules among" in result.stderr
    assert str(old) in result.stderr
    assert result.stdout == ""
