from __future__ import annotations

import subprocess
import sys

import bmad_trio
import bmad_trio.testing


def _public_names(module: object) -> set[str]:
    names = {name for name in dir(module) if not name.startswith("_")} - {"annotations"}
    names -= {"importlib", "logging", "TYPE_CHECKING", "Any"}
    return names | ({"__version__"} if hasattr(module, "__version__") else set())


def test_all_is_sorted_and_unique() -> None:
    for module in (bmad_trio, bmad_trio.testing):
        assert list(module.__all__) == sorted(set(module.__all__)), module.__name__


def test_all_is_complete() -> None:
    for module in (bmad_trio, bmad_trio.testing):
        exported = set(module.__all__)
        public = {n for n in _public_names(module) if not isinstance(getattr(module, n), type(sys))}
        assert public == exported, module.__name__
        for name in exported:
            assert hasattr(module, name), name


def test_public_objects_claim_the_public_module() -> None:
    for name in bmad_trio.__all__:
        obj = getattr(bmad_trio, name)
        module = getattr(obj, "__module__", None)
        if isinstance(obj, type):
            assert module.startswith("bmad_trio"), (name, module)


def test_help_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "from bmad_trio._commandline._main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('claude_agent_sdk', 'rich', 'httpx', 'trio') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "bmad-trio" in done.stdout


def test_version_flag_prints_the_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bmad_trio", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"bmad-trio {bmad_trio.__version__}"
