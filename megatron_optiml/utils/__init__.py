"""Small shared helpers (optional imports, atomic file writes, logging)."""
