"""Test fixtures shipped so plugin authors can test too: tiny VLMs, made-up results, faults."""
