"""Subscription stores: in memory, or in Redis."""
