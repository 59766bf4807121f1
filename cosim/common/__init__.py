"""What every layer of `cosim` uses: progress bars, rendering, interrupts, Ray start-up."""
