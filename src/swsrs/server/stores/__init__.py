"""Where sessions are kept: the interface (``base``), SQLite, Redis, and ``open`` for ``--store``.

Stores know nothing of connections: the data plane and the admin API use
them, never the other way round.
"""
