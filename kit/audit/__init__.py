"""The data audit (``kit audit``): duplicates, shortcuts, train/test shift; see :mod:`kit.audit.run`."""

from kit.audit.run import acknowledge, audit, audit_dir, reminders

__all__ = ["acknowledge", "audit", "audit_dir", "reminders"]
