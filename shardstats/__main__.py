from shardstats.cli import main

raise SystemExit(main())
