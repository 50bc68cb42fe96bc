"""tickline: an authoritative multiplayer game server for Python, with event-sourced state.

One package, four parts, one per kind of user: ``tickline.server`` (the
authoritative side), ``tickline.shared`` (what both ends of the wire agree on),
``tickline.bots`` (the Python client SDK, bots, load testing, capacity) and
``tickline.replays`` (reading matches back). ``tickline.cli`` is the ``tickline``
command, the one module that composes them. Importing this package imports none
of them.
"""
