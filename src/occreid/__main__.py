from occreid.cli.main import main

raise SystemExit(main())
