"""The data plane: attaches to ``/relay/{id}``, pairing, and the bytes between two peers.

``listener`` reads a connection's request head and seats admitted peers;
``admit`` decides who may attach; ``rendezvous`` pairs the two slots of a
session; ``pump`` forwards frames between them; ``splice`` passes a
connection to the node that holds its session.
"""
