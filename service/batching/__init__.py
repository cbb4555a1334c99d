"""Batching: rows from concurrent requests planned into token-budget batches and run together."""
