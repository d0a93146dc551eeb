"""The sans-I/O peer protocol on its own: signals, ends, and every interleaving (hypothesis)."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swsrs.peer import (
    Close,
    Data,
    Ended,
    EndOfStream,
    Paired,
    PeerProtocol,
    ProtocolUsageError,
    State,
    Waiting,
    ends,
)
from swsrs.wire import subprotocol

V1 = subprotocol.SUBPROTOCOL


def paired_v1(features: list[str] | None = None) -> PeerProtocol:
    p = PeerProtocol(V1)
    p.receive_message(subprotocol.paired(tuple(features) if features is not None else ()))
    p.events_received()
    return p


def test_a_relay_without_the_subprotocol_means_raw_and_no_signal() -> None:
    p = PeerProtocol(None)
    assert p.events_received() == [Paired(None, signalled=False)]
    assert p.can_send and not p.confirmed
    p.receive_message('{"type": "eos", "sent": 0}')  # just data from a raw peer
    assert p.events_received() == [Data('{"type": "eos", "sent": 0}')]
    p.send_data(b"x")
    p.send_eof()  # a raw counterpart knows no end-of-stream: the tunnel ends here
    assert p.data_to_send() == [b"x", Close(1000)]
    assert p.ended == Ended(True, "", 1000)


def test_waiting_then_paired_and_nothing_may_be_sent_before() -> None:
    p = PeerProtocol(V1)
    assert not p.can_send
    with pytest.raises(ProtocolUsageError):
        p.send_data(b"too early")
    p.receive_message(subprotocol.waiting(119.5))
    assert p.events_received() == [Waiting(119.5)]
    p.receive_message(subprotocol.paired(("eos", "future")))
    assert p.events_received() == [Paired(frozenset())]  # we speak no optional feature yet
    assert p.can_send and p.confirmed and p.data_to_send() == []


def test_a_raw_counterpart_on_our_relay() -> None:
    p = PeerProtocol(V1)
    p.receive_message(subprotocol.paired(None))
    assert p.events_received() == [Paired(None)]
    p.receive_message("hi")
    p.receive_message(b"\x00")
    assert p.events_received() == [Data("hi"), Data(b"\x00")]
    p.receive_close(1000, "peer disconnected")  # its leaving is the end, as before
    assert p.ended == Ended(True, "", 1000)


def test_data_before_the_pairing_signal_is_a_protocol_error() -> None:
    p = PeerProtocol(V1)
    p.receive_message(b"data")
    assert p.ended is not None and not p.ended.ok and "before its pairing" in p.ended.cause
    assert p.data_to_send()[-1] == Close(1002, "the relay sent data before its pairing signal")


@pytest.mark.parametrize(
    ("code", "reason", "words"),
    [
        (1001, "peer did not attach within 2m0s", "nobody came: peer did not attach within 2m0s"),
        (1001, "session expired", "the session expired"),
        (1000, "session deleted", "the session was deleted"),
        (1001, "relay shutting down", "the relay is shutting down"),
        (None, "", "lost the connection to the relay"),
        (1006, "", "lost the connection to the relay"),
        (1009, "message too big", "too big"),
        (4000, "odd", "the relay closed the tunnel (close 4000: odd)"),
    ],
)
def test_every_relay_end_is_said_in_words(code: int | None, reason: str, words: str) -> None:
    for p in (PeerProtocol(V1), paired_v1()):
        p.receive_close(code, reason)
        assert p.ended is not None and not p.ended.ok and words in p.ended.cause


def test_the_other_side_leaving_mid_stream_is_not_success() -> None:
    p = paired_v1()
    p.receive_close(1000, "peer disconnected")
    assert p.ended == Ended(False, ends.VANISHED, 1000)
    q = paired_v1()
    q.receive_message(json.dumps({"type": "eos", "sent": 0}))
    q.receive_close(1000, "peer disconnected")  # it ended its stream but never heard our end
    assert q.ended == Ended(False, ends.LEFT_BEFORE_CONFIRMING, 1000)


def test_abort_from_the_other_side_names_its_reason() -> None:
    p = paired_v1()
    p.receive_message(json.dumps({"type": "abort", "reason": "cannot connect to target x:1"}))
    assert p.ended == Ended(False, "the other side failed: cannot connect to target x:1")
    q = paired_v1()
    q.fail("target unreachable")
    out = q.data_to_send()
    assert json.loads(str(out[0])) == {"type": "abort", "reason": "target unreachable"}
    assert out[1] == Close(1011, "target unreachable")


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        '{"type": "eos", "sent": 5}',  # 5 bytes never came
        '{"type": "done", "delivered": 0}',  # confirms an end we never sent
        '{"type": "ack", "delivered": 9}',  # more than we sent
        '{"type": "text", "data": 5}',
    ],
)
def test_control_violations_end_the_tunnel(message: str) -> None:
    p = paired_v1()
    p.receive_message(message)
    assert p.ended is not None and p.ended.cause.startswith("protocol error")
    assert isinstance(p.data_to_send()[-1], Close)


def test_unknown_control_messages_are_ignored() -> None:
    p = paired_v1()
    p.receive_message('{"type": "from-the-future", "x": 1}')
    assert p.events_received() == [] and p.state is State.OPEN


def test_data_after_end_of_stream_is_a_protocol_error() -> None:
    p = paired_v1()
    p.receive_message(b"ab")
    p.receive_message('{"type": "eos", "sent": 2}')
    assert p.events_received() == [Data(b"ab"), EndOfStream()]
    p.receive_message(b"more")
    assert p.ended is not None and "after the other side's end-of-stream" in p.ended.cause


# -- two peers through a simulated relay, in every interleaving ---------------------------


@dataclass
class Side:
    proto: PeerProtocol
    to_other: deque[object] = field(default_factory=deque)  # in flight through the relay
    sent: bytearray = field(default_factory=bytearray)
    got: bytearray = field(default_factory=bytearray)
    undelivered: int = 0  # arrived, not yet written to the sink
    eos: bool = False
    sink_closed: bool = False
    closed: bool = False  # its WebSocket is closed
    delivered_at_end: int | None = None  # the other side's delivery when this one ended ok


CLOSED_BY_OTHER = object()


def pump(me: Side, other: Side) -> None:
    """Move what ``me`` emitted into the relay, and note the events ``me`` saw."""
    for item in me.proto.data_to_send():
        if me.closed:
            continue
        if isinstance(item, Close):
            me.closed = True
            me.to_other.append(CLOSED_BY_OTHER)
        else:
            me.to_other.append(item)
    for ev in me.proto.events_received():
        if isinstance(ev, Data):
            assert isinstance(ev.payload, bytes)
            me.got += ev.payload
            me.undelivered += len(ev.payload)
        elif isinstance(ev, EndOfStream):
            me.eos = True
        elif isinstance(ev, Ended) and ev.ok:
            # Ending clean means: the other side has written every byte we sent.
            me.delivered_at_end = other.proto.delivered_bytes


def deliver_one(src: Side, dst: Side) -> None:
    item = src.to_other.popleft()
    if dst.closed:
        return
    if item is CLOSED_BY_OTHER:
        dst.proto.receive_close(1000, "peer disconnected")  # the relay's word for it
        dst.closed = True
    else:
        assert isinstance(item, bytes | str)
        dst.proto.receive_message(item)


def act(side: Side, other: Side, action: str, chunk: bytes) -> None:
    p = side.proto
    if action == "send" and p.can_send:
        p.send_data(chunk)
        side.sent += chunk
    elif action == "eof" and p.can_end:
        p.send_eof()
    elif action == "deliver" and side.to_other:
        deliver_one(side, other)
    elif action == "sink" and side.undelivered:
        p.delivered(side.undelivered)
        side.undelivered = 0
    elif action == "close_sink" and side.eos and not side.undelivered and not side.sink_closed:
        side.sink_closed = True
        p.delivered_eof()
    elif action == "drop" and not side.closed:
        p.receive_close(None)  # its connection is cut: the relay tells the other side
        side.closed = True
        side.to_other.append(CLOSED_BY_OTHER)
    pump(side, other)
    pump(other, side)


def settle(a: Side, b: Side) -> None:
    """Let everything finish: inputs end, the relay delivers, sinks write and close."""

    def snapshot() -> tuple[object, ...]:
        return tuple((len(s.to_other), s.undelivered, s.eos, s.sink_closed, s.proto.state,
                      s.proto.eof_sent) for s in (a, b))  # fmt: skip

    for _ in range(1000):
        before = snapshot()
        for me, other in ((a, b), (b, a)):
            for action in ("eof", "deliver", "sink", "close_sink"):
                act(me, other, action, b"")
        if snapshot() == before:
            return
    raise AssertionError("did not settle")


def connected_pair() -> tuple[Side, Side]:
    a, b = Side(PeerProtocol(V1)), Side(PeerProtocol(V1))
    for s in (a, b):
        s.proto.receive_message(subprotocol.paired(()))
        s.proto.events_received()
    return a, b


steps = st.lists(
    st.tuples(
        st.sampled_from("ab"),
        st.sampled_from(["send", "send", "eof", "deliver", "deliver", "sink", "close_sink"]),
        st.binary(min_size=0, max_size=64),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_any_interleaving_delivers_every_byte_in_order_and_ends_clean(
    script: list[tuple[str, str, bytes]],
) -> None:
    a, b = connected_pair()
    for who, action, chunk in script:
        me, other = (a, b) if who == "a" else (b, a)
        act(me, other, action, chunk)
        assert a.sent.startswith(b.got) and b.sent.startswith(a.got)  # never reordered
    settle(a, b)
    assert bytes(b.got) == bytes(a.sent) and bytes(a.got) == bytes(b.sent)
    for me in (a, b):
        assert me.proto.ended is not None and me.proto.ended.ok, me.proto.ended
        assert me.delivered_at_end == len(me.sent)


@settings(max_examples=300, deadline=None)
@given(steps, st.sampled_from("ab"), st.integers(min_value=0, max_value=80))
def test_a_cut_is_never_called_success_unless_everything_was_delivered(
    script: list[tuple[str, str, bytes]], victim: str, when: int
) -> None:
    a, b = connected_pair()
    script = [*script[:when], (victim, "drop", b""), *script[when:]]
    for who, action, chunk in script:
        me, other = (a, b) if who == "a" else (b, a)
        act(me, other, action, chunk)
    settle(a, b)
    for me, other in ((a, b), (b, a)):
        ended = me.proto.ended
        assert ended is not None
        if ended.ok:  # only a side that finished before the cut may say so
            assert me.delivered_at_end == len(me.sent)
            assert bytes(other.got) == bytes(me.sent)
            assert bytes(me.got) == bytes(other.sent)
        else:
            assert ended.cause


# -- resume: drops anywhere, both sides come back, nothing lost or repeated ----------------


def resuming_pair(limit: int) -> tuple[Side, Side]:
    a = Side(PeerProtocol(V1, frozenset({"resume"}), resume_buffer=limit))
    b = Side(PeerProtocol(V1, frozenset({"resume"}), resume_buffer=limit))
    for s in (a, b):
        s.proto.receive_message(subprotocol.paired(("resume",)))
        assert not s.proto.can_send  # not before the other side said who it is
    pump(a, b)
    pump(b, a)
    deliver_one(a, b)
    deliver_one(b, a)
    pump(a, b)
    pump(b, a)
    assert a.proto.can_send and b.proto.can_send
    return a, b


def cut(a: Side, b: Side, keep_a: int, keep_b: int) -> None:
    """The relay loses both connections; what it had not delivered yet is partly lost."""
    for s, keep in ((a, keep_a), (b, keep_b)):
        while len(s.to_other) > keep:
            s.to_other.pop()
    # Whatever survived of the queues still arrives before the close does.
    for src, dst in ((a, b), (b, a)):
        while src.to_other:
            deliver_one(src, dst)
    for s, other in ((a, b), (b, a)):
        s.proto.receive_close(None if s is a else 1000, "" if s is a else "peer disconnected")
        pump(s, other)


def come_back(a: Side, b: Side) -> None:
    for s in (a, b):
        assert s.proto.state is State.AWAY, s.proto.ended
        s.proto.events_received()
        s.proto.reattached(V1)
        s.closed = False
        s.to_other.clear()
    for s in (a, b):
        s.proto.receive_message(subprotocol.paired(("resume",)))
    pump(a, b)
    pump(b, a)


def step(a: Side, b: Side, who: str, action: str, chunk: bytes) -> None:
    me, other = (a, b) if who == "a" else (b, a)
    if action == "send" and not me.proto.can_send:
        return  # the driver waits (pairing, resuming, or a full replay buffer)
    act(me, other, action, chunk)


@settings(max_examples=300, deadline=None)
@given(
    steps,
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 5), st.integers(0, 5)), max_size=3),
    st.sampled_from([64, 256, 4096]),
)
def test_resume_after_any_cuts_delivers_every_byte_exactly_once(
    script: list[tuple[str, str, bytes]], cuts: list[tuple[int, int, int]], limit: int
) -> None:
    a, b = resuming_pair(limit)
    at = {when: (ka, kb) for when, ka, kb in cuts}
    for i, (who, action, chunk) in enumerate(script):
        if i in at and a.proto.state is State.OPEN and b.proto.state is State.OPEN:
            cut(a, b, *at[i])
            come_back(a, b)
        step(a, b, who, action, chunk)
        assert a.sent.startswith(b.got) and b.sent.startswith(a.got)
    settle(a, b)
    assert bytes(b.got) == bytes(a.sent) and bytes(a.got) == bytes(b.sent)
    for me in (a, b):
        assert me.proto.ended is not None and me.proto.ended.ok, me.proto.ended
        assert me.proto.replay is not None and me.proto.replay.size <= limit + 64


def test_a_side_that_restarted_cannot_be_resumed() -> None:
    a, b = resuming_pair(4096)
    a.proto.send_data(b"x" * 10)
    pump(a, b)
    cut(a, b, 0, 0)
    fresh = Side(PeerProtocol(V1, frozenset({"resume"})))  # b's process died; a new one came
    a.proto.reattached(V1)
    for s in (a, fresh):
        s.proto.receive_message(subprotocol.paired(("resume",)))
    pump(a, fresh)
    pump(fresh, a)
    while a.to_other or fresh.to_other:
        if a.to_other:
            deliver_one(a, fresh)
        if fresh.to_other:
            deliver_one(fresh, a)
        pump(a, fresh)
        pump(fresh, a)
    assert a.proto.ended is not None and "restarted" in a.proto.ended.cause
    assert fresh.proto.ended is not None and "earlier run" in fresh.proto.ended.cause
