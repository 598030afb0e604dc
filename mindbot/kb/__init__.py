"""MindBot's knowledge base: documents ingested with LlamaIndex, embedded and retrieved offline."""
