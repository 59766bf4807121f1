"""The V2X wire and air: codec, link models, pose error, delivery in simulated time (numpy only)."""
