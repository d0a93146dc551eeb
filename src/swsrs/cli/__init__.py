"""The ``swsrs`` command line: parses flags and calls the SDK or the server."""
