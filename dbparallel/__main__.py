from dbparallel.cli import main

raise SystemExit(main())
