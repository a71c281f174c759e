"""What is decided about each version: lifecycle, roles and approvals, and the audit log."""
