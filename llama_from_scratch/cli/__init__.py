"""The command line, `python -m llama_from_scratch COMMAND`: one module per command."""
