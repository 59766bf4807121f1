"""Ray actors: one per connected vehicle plus the ego role; thin shells over models and channel."""
