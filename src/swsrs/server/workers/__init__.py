"""The process model of ``--workers N``: the front's pool, a worker, the channel between."""
