"""Retrieval: documents and hits, vector search, the knowledge base, hybrid search and re-ranking."""
