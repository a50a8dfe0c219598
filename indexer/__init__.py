"""vidseek indexer: probe, plan windows, decode, caption, parse, embed, commit."""
