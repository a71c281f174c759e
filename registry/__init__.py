"""The facts of each model version: what was trained, on what, with which card and artifact."""
