"""Datasets, records, part labels on disk, transforms and samplers."""
