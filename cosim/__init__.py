"""Orchestration: the simulation driver, experiments, the cosim CLI and outputs."""
