"""spanwatch."""
