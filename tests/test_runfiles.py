"""Per-run files: events.jsonl, transcripts, run.log; all redacted."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import anyio
import pytest

from bmad_trio._agents._runner import AgentMessage, Role, ToolCall
from bmad_trio._errors import StateError
from bmad_trio._events import AgentActivity, PhaseStarted, RunFinished, RunStarted, SessionFinished
from bmad_trio._state._redact import REDACTED, Redactor
from bmad_trio._state._run_files import (
    RunFiles,
    attach_run_log,
    read_events,
    run_dir,
    run_log_context,
)

API_KEY = "sk-ant-api03-runfiles-KEY-0123456789"
ENV_SECRET = "plain-env-secret-value-42"
SLACK_URL = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/xxxxxxxxxxxxxxxxxxxxxxxx"
SECRETS = (
    API_KEY,
    ENV_SECRET,
    "xxxxxxxxxxxxxxxxxxxxxxxx",
    "pa55w0rd-x",
    "tok3n-value",
    "bearer-tok-123",
)
RUN_ID = "20261125-010203-ab12"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor.from_environ({"ANTHROPIC_API_KEY": API_KEY, "MY_TOKEN": ENV_SECRET})


def assert_clean(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for secret in SECRETS:
        assert secret not in text, (secret, path)


def test_layout(tmp_path: Path, redactor: Redactor) -> None:
    with RunFiles(tmp_path, RUN_ID, redactor) as files:
        assert files.root == tmp_path / ".bmad-trio" / "runs" / RUN_ID == run_dir(tmp_path, RUN_ID)
        assert files.events_path.name == "events.jsonl"
        assert files.log_path.name == "run.log"
        assert files.transcript_path("1.2", 3, Role.DEV) == (
            files.root / "transcripts" / "1.2-3-dev.jsonl"
        )
        # story ids come from user files: no path traversal
        assert files.transcript_path("../../x/y", 1, "qa").parent == files.transcripts_dir
        assert files.events_path.exists()


def test_events_jsonl(tmp_path: Path, redactor: Redactor) -> None:
    events = [
        RunStarted(run_id=RUN_ID, epic="e.md", project=str(tmp_path), stories=("1.1",)),
        PhaseStarted(story_id="1.1", phase="develop", role="dev", cycle=1),
        AgentActivity(
            story_id="1.1", role="dev", tool="Bash", target=f"curl -H 'x-api-key: {ENV_SECRET}'"
        ),
        SessionFinished(
            story_id="1.1",
            role="dev",
            cycle=1,
            outcome="api_error",
            cost_usd=0.1,
            duration_s=2.0,
            error=f"401 with key {API_KEY} posting to {SLACK_URL}",
        ),
    ]
    written: list[object] = []
    with RunFiles(tmp_path, RUN_ID, redactor) as files:
        for event in events:
            written.append(files.write_event(event))
            # flushed per event: readable while the run goes on
            assert files.events_path.read_text().count("\n") == events.index(event) + 1
    lines = [json.loads(line) for line in files.events_path.read_text().splitlines()]
    assert [line["type"] for line in lines] == [
        "run_started",
        "phase_started",
        "agent_activity",
        "session_finished",
    ]
    assert all(isinstance(line["ts"], float) for line in lines)
    assert lines[2]["target"] == f"curl -H 'x-api-key: {REDACTED}'"
    assert lines[3]["error"] == (
        f"401 with key {REDACTED} posting to https://hooks.slack.com/services/{REDACTED}"
    )
    assert_clean(files.events_path)
    # They read back as the same events (apart from redaction).
    back = read_events(files.events_path)
    assert back[:2] == events[:2]
    # write_event returns the redacted event: exactly what the file has (the run streams that one)
    assert back == written
    assert written[0] is events[0]  # nothing to redact: the same object

    # A resume appends to the same file.
    with RunFiles(tmp_path, RUN_ID, redactor) as files:
        files.write_event(RunFinished(status="done", cost_usd=1.0, duration_s=3.0))
        assert len(files.read_events()) == 5


def test_read_events_skips_a_torn_last_line(tmp_path: Path, redactor: Redactor) -> None:
    with RunFiles(tmp_path, RUN_ID, redactor) as files:
        files.write_event(RunFinished(status="done", cost_usd=1.0, duration_s=3.0))
    with files.events_path.open("a") as f:
        f.write('{"type": "run_fin')
    assert len(read_events(files.events_path)) == 1
    with files.events_path.open("a") as f:
        f.write("\n{}\n")
    with pytest.raises(StateError, match=r"events.jsonl:2: not a JSON line"):
        read_events(files.events_path)


def test_write_after_close_is_an_error(tmp_path: Path, redactor: Redactor) -> None:
    files = RunFiles(tmp_path, RUN_ID, redactor)
    files.close()
    files.close()
    with pytest.raises(ValueError, match="closed"):
        files.write_event(RunFinished(status="done", cost_usd=1.0, duration_s=3.0))


def test_transcripts(tmp_path: Path, redactor: Redactor) -> None:
    messages = [
        AgentMessage(
            kind="system",
            data={"type": "system", "env": {"ANTHROPIC_API_KEY": API_KEY}, "apiKeySource": "env"},
        ),
        AgentMessage(
            kind="tool_use",
            tool=ToolCall("Bash", "git push https://bob:pa55w0rd-x@example.com"),
            data={
                "type": "tool_use",
                "input": {"command": "git push https://bob:pa55w0rd-x@example.com"},
                "headers": {"Authorization": "Bearer bearer-tok-123"},
            },
        ),
        AgentMessage(kind="text", text=f"the token is {ENV_SECRET}"),  # no data: built from fields
        AgentMessage(
            kind="result",
            data={
                "usage": {"input_tokens": 10, "output_tokens": 2},
                "url": f"{SLACK_URL}?token=tok3n-value",
            },
        ),
    ]
    with RunFiles(tmp_path, RUN_ID, redactor) as files:
        writer = files.transcript("1.1", 1, Role.DEV)
        path = writer.write_all(messages)
        assert writer.count == 4
    assert writer.closed  # closed by RunFiles.close
    assert path == tmp_path / ".bmad-trio" / "runs" / RUN_ID / "transcripts" / "1.1-1-dev.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["env"] == {"ANTHROPIC_API_KEY": REDACTED}
    assert lines[1]["input"]["command"] == f"git push https://bob:{REDACTED}@example.com"
    assert lines[1]["headers"] == {"Authorization": REDACTED}
    assert lines[2] == {"kind": "text", "text": f"the token is {REDACTED}"}
    assert lines[3]["usage"] == {"input_tokens": 10, "output_tokens": 2}
    assert_clean(path)


@pytest.mark.anyio
async def test_transcript_drains_a_stream(tmp_path: Path, redactor: Redactor) -> None:
    send, receive = anyio.create_memory_object_stream[AgentMessage](10)
    with RunFiles(tmp_path, RUN_ID, redactor) as files, files.transcript("1.1", 2, "qa") as writer:
        async with anyio.create_task_group() as tg:

            async def produce() -> None:
                async with send:
                    for n in range(3):
                        await send.send(AgentMessage(kind="text", text=f"{n} {API_KEY}"))

            tg.start_soon(produce)
            async with receive:
                path = await writer.drain(receive)
    assert path.name == "1.1-2-qa.jsonl"
    assert len(path.read_text().splitlines()) == 3
    assert_clean(path)


def test_run_log(tmp_path: Path, redactor: Redactor) -> None:
    logger = logging.getLogger("bmad_trio.workflow")
    before = logging.getLogger("bmad_trio").level
    with RunFiles(tmp_path, RUN_ID, redactor) as files:
        handle = files.attach_log()
        assert files.attach_log() is handle
        assert logging.getLogger("bmad_trio").level == before  # levels are never changed
        handle.logger.info("story %s using key %s", "1.1", API_KEY)  # the run's own lines
        handle.logger.debug("debug is below the level %s", ENV_SECRET)
        with run_log_context(RUN_ID):
            logger.warning("notify %s failed", SLACK_URL)
            try:
                raise RuntimeError(f"boom Authorization: Bearer bearer-tok-123 {ENV_SECRET}")
            except RuntimeError:
                logger.exception(
                    "session crashed for https://bob:pa55w0rd-x@host/ ?token=tok3n-value"
                )
        with run_log_context("another-run"):
            logger.warning("another run's line")
        logger.warning("a line of no run")
    assert not handle.attached
    assert logging.getLogger("bmad_trio").level == before
    left = logging.getLogger("bmad_trio").handlers
    assert [h for h in left if not isinstance(h, logging.NullHandler)] == []  # run.log detached
    with run_log_context(RUN_ID):
        logger.warning("after detach %s", "not logged")
    text = files.log_path.read_text()
    assert f"story 1.1 using key {REDACTED}" in text
    assert "debug is below" not in text
    assert f"notify https://hooks.slack.com/services/{REDACTED} failed" in text
    assert "RuntimeError: boom" in text  # the traceback is there, redacted
    assert "another run" not in text
    assert "of no run" not in text
    assert "not logged" not in text
    assert_clean(files.log_path)


def test_a_run_logger_line_reaches_the_application_only_at_its_level(
    tmp_path: Path, redactor: Redactor, caplog: pytest.LogCaptureFixture
) -> None:
    shared = logging.getLogger("bmad_trio.run")
    with RunFiles(tmp_path, RUN_ID, redactor) as files:
        handle = files.attach_log()
        with caplog.at_level(logging.WARNING, logger="bmad_trio"):
            handle.logger.info("quiet %s", API_KEY)
            handle.logger.warning("loud %s", API_KEY)
    assert shared.level == logging.NOTSET
    assert [r.getMessage() for r in caplog.records] == [f"loud {REDACTED}"]
    text = files.log_path.read_text()
    assert text.count("quiet") == 1  # each line once
    assert text.count("loud") == 1


def test_attach_run_log_standalone(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "x" / "run.log"
    with attach_run_log(path, redactor, run_id=RUN_ID, level=logging.DEBUG) as handle:
        assert handle.path == path
        handle.logger.debug("secret %s", ENV_SECRET)
    handle.detach()  # idempotent
    assert path.read_text().endswith(f"secret {REDACTED}\n")


def test_event_write_speed(tmp_path: Path, redactor: Redactor) -> None:
    event = SessionFinished(
        story_id="1.1", role="dev", cycle=1, outcome="ok", cost_usd=0.1, duration_s=2.0
    )
    with RunFiles(tmp_path, RUN_ID, redactor) as files:
        start = time.perf_counter()
        for _ in range(1000):
            files.write_event(event)
        per_event = (time.perf_counter() - start) / 1000
    # measured ~25 us on the dev box; generous bound for slow CI
    assert per_event < 0.005, per_event
