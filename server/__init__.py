"""The authoritative side: QUIC endpoint, sessions, the match tick loop, the event-log writer."""
