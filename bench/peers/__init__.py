"""Peer servers for the benchmark, one small file each, all on the same private Redis.

Every peer except python-socketio speaks quart-chat's JSON protocol v1 (the subset the
load generator uses: welcome, subscribe, publish, result, message), so one adapter
drives them all; python-socketio is driven through Engine.IO/Socket.IO framing.
"""
