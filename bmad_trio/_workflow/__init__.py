"""The workflow: the public run API, the scheduler, the story cycle, session services, the quality-gate phase and the role prompts."""
