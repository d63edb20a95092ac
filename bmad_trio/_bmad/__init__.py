"""The BMAD project model: read and write a user's BMAD v4, v6 or plain project exactly.

Pure, synchronous file code (no model calls); the workflow calls it via ``anyio.to_thread``.
Every problem with the user's files is a :class:`~bmad_trio.ProjectError` naming file and line,
raised before anything is written.
"""

from ._epics import Epic, EpicStory, find_epic, parse_epic, parse_epic_document, select_epic
from ._gates import (
    GateDecision,
    GateIssue,
    GateReport,
    QaGate,
    ReviewVerdict,
    find_gate_file,
    find_gate_files,
    read_gate,
    review_already_passed,
    story_gate,
)
from ._ids import split_story_id, story_key, story_slug, validate_story_id
from ._layout import BmadVersion, Layout, detect_layout
from ._sprint_status import (
    SPRINT_ORDER,
    EffectiveStatus,
    SprintEntry,
    SprintStatusFile,
    bmad_story_key,
    effective_status,
    read_sprint_entries,
    read_sprint_status,
    set_sprint_status,
    sprint_key_for,
    sprint_word_for,
)
from ._status import (
    STATUS_SPELLINGS,
    SpellingFamily,
    StoryStatus,
    parse_status_word,
    spell_status,
    spelling_family_of,
)
from ._status_line import StatusReading, read_status, read_story_status, set_story_status
from ._stories import (
    ReviewFinding,
    Story,
    StoryTask,
    find_story_file,
    new_story_path,
    parse_story,
)
from ._story_state import StoryState, read_story_state
from ._textio import MAX_FILE_BYTES

__all__ = [
    "MAX_FILE_BYTES",
    "SPRINT_ORDER",
    "STATUS_SPELLINGS",
    "BmadVersion",
    "EffectiveStatus",
    "Epic",
    "EpicStory",
    "GateDecision",
    "GateIssue",
    "GateReport",
    "Layout",
    "QaGate",
    "ReviewFinding",
    "ReviewVerdict",
    "SpellingFamily",
    "SprintEntry",
    "SprintStatusFile",
    "StatusReading",
    "Story",
    "StoryState",
    "StoryStatus",
    "StoryTask",
    "bmad_story_key",
    "detect_layout",
    "effective_status",
    "find_epic",
    "find_gate_file",
    "find_gate_files",
    "find_story_file",
    "new_story_path",
    "parse_epic",
    "parse_epic_document",
    "parse_status_word",
    "parse_story",
    "read_gate",
    "read_sprint_entries",
    "read_sprint_status",
    "read_status",
    "read_story_state",
    "read_story_status",
    "review_already_passed",
    "select_epic",
    "set_sprint_status",
    "set_story_status",
    "spell_status",
    "spelling_family_of",
    "split_story_id",
    "sprint_key_for",
    "sprint_word_for",
    "story_gate",
    "story_key",
    "story_slug",
    "validate_story_id",
]
