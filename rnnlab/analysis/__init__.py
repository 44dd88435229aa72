"""Analyses of trained and untrained models: gradient flow, gates, the HTML report."""
