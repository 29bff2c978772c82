"""Device detection, rank information and environment metadata."""
