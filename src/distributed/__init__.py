"""Data-parallel and sharded training on torch.distributed: our readable strategies (CS336 assignment 2's list).

    from src.distributed import NaiveDDP, FlatDDP, OverlapDDP, BucketedDDP, ShardedOptimizer, FSDP, gather_full_params
"""

from src.distributed.ddp_bucketed import BucketedDDP
from src.distributed.ddp_flat import FlatDDP
from src.distributed.ddp_naive import NaiveDDP
from src.distributed.ddp_overlap import OverlapDDP
from src.distributed.fsdp import FSDP, gather_full_params
from src.distributed.sharded_optimizer import ShardedOptimizer

__all__ = ["NaiveDDP", "FlatDDP", "OverlapDDP", "BucketedDDP", "ShardedOptimizer", "FSDP", "gather_full_params"]
