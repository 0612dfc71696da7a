"""fastconv (being assembled)."""
