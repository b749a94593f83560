"""Long fault runs: real processes killed, restarted, stalled and flooded (marker `chaos`)."""
