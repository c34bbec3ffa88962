from tracklm.cli import main

raise SystemExit(main())
