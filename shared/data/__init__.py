"""Data in: reading files, the contract check, quarantine, schema inference, monitoring."""
