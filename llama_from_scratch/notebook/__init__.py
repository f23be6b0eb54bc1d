"""Helpers for the book's notebooks: the setup cell, showing source, figures, grading, seeding."""
