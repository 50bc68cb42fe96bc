"""What both ends of the wire agree on: protocol, game rules, deltas.

Sans-I/O: nothing here opens a socket or a file, reads a clock, or needs asyncio.
"""
