"""The BMAD project model: read and write a user's BMAD v4, v6 or plain project exactly.

Pure, synchronous file code (no model calls); the workflow calls it via ``anyio.to_thread``.
Every problem with the user's files is a :class:`~bmad_trio.ProjectError` naming file and line,
raised before anything is written.
"""

from ._epics import (
    Epic,
    EpicStory,
    epic_candidates,
    find_epic,
    parse_epic,
    parse_epic_document,
    resolve_epics,
    select_epic,
)
from ._gates import GateDecision, GateIssue, QaGate, find_gate_file, read_gate
from ._ids import same_story_id, split_story_id, story_key, story_slug, validate_story_id
from ._layout import BmadVersion, Layout, detect_layout
from ._sprint_status import (
    SPRINT_ORDER,
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
from ._status_line import set_story_status
from ._stories import (
    ReviewFinding,
    Story,
    StoryFileChoice,
    StoryTask,
    cross_epic_dependency_met,
    find_story_file,
    locate_story_file,
    new_story_path,
    parse_story,
    sprint_keys_for,
    story_dirs_near,
)
from ._textio import MAX_FILE_BYTES

__all__ = [
    "MAX_FILE_BYTES",
    "SPRINT_ORDER",
    "STATUS_SPELLINGS",
    "BmadVersion",
    "Epic",
    "EpicStory",
    "GateDecision",
    "GateIssue",
    "Layout",
    "QaGate",
    "ReviewFinding",
    "SpellingFamily",
    "Story",
    "StoryFileChoice",
    "StoryStatus",
    "StoryTask",
    "cross_epic_dependency_met",
    "detect_layout",
    "epic_candidates",
    "find_epic",
    "find_gate_file",
    "find_story_file",
    "locate_story_file",
    "new_story_path",
    "parse_epic",
    "parse_epic_document",
    "parse_status_word",
    "parse_story",
    "read_gate",
    "read_sprint_status",
    "resolve_epics",
    "same_story_id",
    "select_epic",
    "set_sprint_status",
    "set_story_status",
    "spell_status",
    "spelling_family_of",
    "split_story_id",
    "sprint_key_for",
    "sprint_keys_for",
    "sprint_word_for",
    "story_dirs_near",
    "story_key",
    "story_slug",
    "validate_story_id",
]
