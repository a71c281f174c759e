"""Plumbing every app may use; it imports no project app (docs/architecture.md, section 2)."""
