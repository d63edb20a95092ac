"""Sessions: ``nox`` runs tests on trio and asyncio, the real-CLI tests again on the portable
containment path (the one macOS uses), the trio embedding tests, lint and typecheck."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = [
    "tests-trio",
    "tests-asyncio",
    "tests-portable",
    "distributed",
    "embed",
    "lint",
    "typecheck",
]
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
TEST_DEPS = nox.project.dependency_groups(PYPROJECT, "test")
LINT_DEPS = nox.project.dependency_groups(PYPROJECT, "lint")
TYPECHECK_DEPS = nox.project.dependency_groups(PYPROJECT, "typecheck")
BENCH_DEPS = nox.project.dependency_groups(PYPROJECT, "bench")


NOT_DISTRIBUTED = ("--ignore=tests/distributed",)
"""The distributed tests need the extra and PostgreSQL: their own session runs them."""


def _install_project(session: nox.Session, *extra: str) -> None:
    session.install(".", *extra)


def _pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    # pytest exits 5 when it collects no test: nox counts that as a failure, so an empty run fails.
    session.run("python", "-m", "pytest", *args, *session.posargs, env=env)


@nox.session(name="tests-trio")
def tests_trio(session: nox.Session) -> None:
    """The test suite on the trio backend (anyio plugin; pytest-trio disabled)."""
    _install_project(session, *TEST_DEPS)
    _pytest(session, "-p", "no:trio", "--ignore=tests/embed", *NOT_DISTRIBUTED, "--backends=trio")


@nox.session(name="tests-asyncio")
def tests_asyncio(session: nox.Session) -> None:
    """The test suite on the asyncio backend (anyio plugin; pytest-trio disabled)."""
    _install_project(session, *TEST_DEPS)
    _pytest(
        session, "-p", "no:trio", "--ignore=tests/embed", *NOT_DISTRIBUTED, "--backends=asyncio"
    )


@nox.session(name="tests-portable")
def tests_portable(session: nox.Session) -> None:
    """The test suite on trio with the Linux-only mechanisms off (``BMAD_TRIO_CONTAINMENT=portable``):
    the path macOS uses, run here. Every test that starts processes (real CLIs, quality gates,
    git) goes through the containment layer's portable path.

    Left out, to keep CI time in check: the 200-session soak and the benchmark smoke runs, which
    measure throughput and memory, not containment (~6 of the ~17 minutes the real-CLI tests took
    on a loaded 2-core machine)."""
    _install_project(session, *TEST_DEPS)
    _pytest(
        session,
        *("-p", "no:trio", "--ignore=tests/embed", *NOT_DISTRIBUTED, "--backends=trio"),
        *("--ignore=tests/e2e/test_session_soak.py", "--ignore=tests/test_bench.py"),
        env={"BMAD_TRIO_CONTAINMENT": "portable"},
    )


@nox.session
def distributed(session: nox.Session) -> None:
    """Many machines (the ``distributed`` extra): workers as processes, PostgreSQL on loopback
    (started by the tests; they skip, saying so, without its binaries), a bare repository as the
    shared remote; the coordinator on trio, then on asyncio."""
    _install_project(session, *TEST_DEPS)
    session.install(".[distributed]")
    _pytest(session, "-p", "no:trio", "tests/distributed", "--backends=trio")
    # On asyncio: the coordinator's side (and, in the e2e test, the workers' event loops); the
    # worker-fault tests drive worker processes whose backend the test's does not change.
    _pytest(
        session,
        *("-p", "no:trio", "--backends=asyncio", "tests/distributed"),
        "--ignore=tests/distributed/test_worker_faults.py",
    )


@nox.session
def embed(session: nox.Session) -> None:
    """Trio-only embedding tests with pytest-trio (the anyio plugin disabled)."""
    _install_project(session, *TEST_DEPS)
    _pytest(session, "-p", "no:anyio", "tests/embed")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check (with the ASYNC rules) and ruff format --check."""
    session.install(*LINT_DEPS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """basedpyright in strict mode on bmad_trio/, and the public API's type completeness."""
    _install_project(session, *TYPECHECK_DEPS)
    session.install(".[distributed]")  # _distributed is checked against dbos and SQLAlchemy
    session.run("basedpyright", "bmad_trio")
    session.run("basedpyright", "--ignoreexternal", "--verifytypes", "bmad_trio")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks (real CLI against the scripted server); writes bench/results/ and docs/images/."""
    _install_project(session, *BENCH_DEPS)
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(default=False)
def docs(session: nox.Session) -> None:
    """Check the docs: every code example runs and the config reference matches the code."""
    _install_project(session, *TEST_DEPS)
    session.run("python", "-m", "pytest", "-p", "no:trio", "tests/test_docs.py", "--backends=trio")
