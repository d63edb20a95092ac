"""Agents: the runner interface, the Claude Code runner, its CLI processes, the tool policy."""
