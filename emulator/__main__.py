from emulator.server import main

raise SystemExit(main())
