from ._commandline._main import main

raise SystemExit(main())
