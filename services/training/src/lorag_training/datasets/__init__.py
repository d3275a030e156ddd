"""Datasets: validation with line-numbered issues, token statistics, and the content-addressed store."""
