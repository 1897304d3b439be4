"""Data-parallel and sharded training on torch.distributed: our readable strategies beside PyTorch's own."""
