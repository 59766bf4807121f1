"""One simulation: the tick loop (driver), executors, run config, log, outputs and scoring."""
