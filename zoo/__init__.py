"""gapcam model zoo: versioned, checksummed model packages (packing, verifying and fetching come next)."""
