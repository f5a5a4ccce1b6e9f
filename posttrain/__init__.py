"""Shared library for the post-training recipes."""
