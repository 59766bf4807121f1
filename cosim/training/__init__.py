"""Training: the train loop and its config, Ray Train, evaluation, dataset building."""
