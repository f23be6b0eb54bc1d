"""Build and check tooling for the book and the exercises (not part of the installed package)."""
