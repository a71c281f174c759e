"""Statistics and the rules built on them: a leaf package (numpy, scipy and pandas only).

``governance`` (the validation gates) and ``monitoring`` (the checks) both import it, so neither
imports the other for a number; see docs/architecture.md section 2.
"""
