"""Experiment runners: the side-by-side benchmark, the DR ablations, the speed benchmark."""
