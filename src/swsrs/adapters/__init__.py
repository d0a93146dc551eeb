"""Adapters: pumps between a tunnel :class:`~swsrs.Connection` and TCP or stdin/stdout."""
