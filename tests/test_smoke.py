"""The smallest promise: two clients chat, with either broker."""

from __future__ import annotations


def test_two_clients_exchange_a_message(connect):
    """A published message reaches every subscriber, the sender included."""
    alice, bob = connect("alice"), connect("bob")
    alice.ok("subscribe", channel="lobby")
    bob.ok("subscribe", channel="lobby")
    mid = alice.ok("publish", channel="lobby", text="hi")["mid"]
    for client in (alice, bob):
        message = client.next()
        assert (message["sender"], message["text"], message["mid"]) == ("alice", "hi", mid)
