"""REST plumbing every app's API shares: error envelope, strict query parameters, parsers,
pagination and throttling. Imports no project package (docs/architecture.md, section 2)."""
