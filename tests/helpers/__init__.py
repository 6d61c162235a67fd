"""Helpers shared by the tests: mounting processes, waiting with timeouts."""
