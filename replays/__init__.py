"""Reading matches back from the event log: listing, and verification by re-simulation."""
