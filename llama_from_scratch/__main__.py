"""`python -m llama_from_scratch ...`: see `llama_from_scratch.cli.main`."""

from llama_from_scratch.cli.main import main

raise SystemExit(main())
