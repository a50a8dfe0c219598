"""vidseek storage: SQL (source of truth) and the FAISS vector index derived from it."""
