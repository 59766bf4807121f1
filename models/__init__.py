"""The torch side: voxelization, encoders, fusion, diffusion refiner, head, metrics, training."""
