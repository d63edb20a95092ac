"""The order a run takes its stories in: every story after the selected stories it depends on,
epic order otherwise. Used by the scheduler (``_run._schedule``) and by ``plan``, so both agree.
Pure computation; nothing to cancel."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from .._bmad import EpicStory
from .._errors import ProjectError

__all__ = ["run_order", "widest_level"]


def run_order(stories: Sequence[EpicStory]) -> tuple[EpicStory, ...]:
    """``stories`` in a topological order of their dependencies, the earliest in epic order first.

    Only dependencies on stories in ``stories`` count: a story that is not selected, or belongs to
    another epic, orders nothing (the run does not wait for it). Among the stories whose
    dependencies are already placed, the one that comes first in ``stories`` goes next, so an epic
    without forward dependencies keeps its own order. Raises ProjectError for a dependency cycle
    (epic parsing rejects those already; this is the last line of defence, as a cycle would
    otherwise leave stories that never become ready).
    """
    position = {story.story_id: index for index, story in enumerate(stories)}
    # waiting_on[i]: how many selected dependencies story i still waits for; unlocks[j]: the
    # stories that wait for story j. A self-dependency is meaningless and ignored.
    waiting_on = [0] * len(stories)
    unlocks: list[list[int]] = [[] for _ in stories]
    for index, story in enumerate(stories):
        for dep in dict.fromkeys(story.dependencies):
            dep_index = position.get(dep)
            if dep_index is not None and dep_index != index:
                waiting_on[index] += 1
                unlocks[dep_index].append(index)
    ready = [index for index, count in enumerate(waiting_on) if count == 0]
    heapq.heapify(ready)  # smallest epic position first
    ordered: list[EpicStory] = []
    while ready:
        index = heapq.heappop(ready)
        ordered.append(stories[index])
        for later in unlocks[index]:
            waiting_on[later] -= 1
            if waiting_on[later] == 0:
                heapq.heappush(ready, later)
    if len(ordered) < len(stories):
        stuck = [s.story_id for i, s in enumerate(stories) if waiting_on[i]]
        raise ProjectError("dependency cycle among stories " + ", ".join(stuck))
    return tuple(ordered)


def widest_level(stories: Sequence[EpicStory]) -> int:
    """How many of ``stories`` can run at once at most, level by level: the largest number of
    stories at the same depth of the dependency graph (a story's depth is one more than its
    deepest selected dependency's). 0 for no stories."""
    position = {story.story_id: index for index, story in enumerate(stories)}
    depth: dict[int, int] = {}
    for story in run_order(stories):  # dependencies first, so theirs are known
        index = position[story.story_id]
        deps = [position[d] for d in story.dependencies if d in position and position[d] != index]
        depth[index] = 1 + max((depth[d] for d in deps), default=-1)
    counts: dict[int, int] = {}
    for level in depth.values():
        counts[level] = counts.get(level, 0) + 1
    return max(counts.values(), default=0)
