"""`python -m llama_from_scratch ...`: see `llama_from_scratch.cli`."""

from llama_from_scratch.cli import main

raise SystemExit(main())
