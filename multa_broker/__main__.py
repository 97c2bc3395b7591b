from multa_broker.cli import main

raise SystemExit(main())
