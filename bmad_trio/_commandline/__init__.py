"""The ``bmad-trio`` command line and what only it uses: progress displays, notifications, doctor, demo, plan."""
