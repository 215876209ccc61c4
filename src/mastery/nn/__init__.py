"""Neural-network parts: NumPy layers written from scratch and PyTorch training utilities."""
