from mlspec.cli import main

raise SystemExit(main())
