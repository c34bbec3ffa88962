"""Tracks -> token sentences, pairs, masking, batches."""
