"""Experiments over many runs: the bandwidth sweep and the robustness benchmark."""
