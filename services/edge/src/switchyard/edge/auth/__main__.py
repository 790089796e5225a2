"""`python -m switchyard.edge.auth keys ...`: the keys CLI on its own."""

from switchyard.edge.auth.cli import main

raise SystemExit(main())
