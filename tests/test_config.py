from __future__ import annotations

from pathlib import Path

import pytest

from bmad_trio import ConfigError, GateCommand
from bmad_trio._config import CONFIG_KEYS, load_config


def test_defaults_without_config_files(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.project == tmp_path.resolve()
    assert config.max_cycles == 10
    assert config.session_timeout == 2700
    assert config.jobs is None  # chosen per run: see effective_jobs
    assert config.workspace == "worktrees"
    assert config.finish == "merge"
    assert config.gates is None  # detected from the project when the run starts


def test_pyproject_table_then_own_file_then_flags(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.bmad-trio]\nmax-cycles = 3\nmodel = "a"\n'
        '[[tool.bmad-trio.gates]]\nname = "unit"\ncommand = "python -m pytest -x"\n'
    )
    (tmp_path / "bmad-trio.toml").write_text('model = "b"\nbudget_usd = 2\n')
    config = load_config(tmp_path, overrides={"jobs": 2, "model": None})
    assert config.max_cycles == 3
    assert config.model == "b"
    assert config.budget_usd == 2
    assert config.jobs == 2
    assert config.gates == (GateCommand("unit", ("python", "-m", "pytest", "-x")),)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("colour = 1\n", "unknown key 'colour'"),
        ('max_cycles = "ten"\n', "key 'max_cycles' must be an integer"),
        ("skip_gates = 1\n", "key 'skip_gates' must be true or false"),
        ("jobs = true\n", "key 'jobs' must be an integer"),
        ('progress = "fancy"\n', "key 'progress' must be one of"),
        ("gates = [{ name = 'x' }]\n", "gates[0]'.command"),
        ("max_cycles = [\n", "invalid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bmad-trio.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_non_positive_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_cycles must be > 0"):
        load_config(tmp_path, overrides={"max_cycles": 0})


def test_every_runconfig_field_but_paths_is_a_config_key() -> None:
    import attrs

    from bmad_trio import RunConfig

    fields = {f.name for f in attrs.fields(RunConfig)} - {"project"}
    assert fields == set(CONFIG_KEYS)
