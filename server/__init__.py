"""vidseek server: gRPC service, search, ingest job runner, CLI."""
