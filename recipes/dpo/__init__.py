"""Offline Diffusion-DPO on preference pairs from a file, a folder or a dataset."""
