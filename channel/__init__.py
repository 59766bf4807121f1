"""The V2X wire and air: codec, link models, pose error, delivery in simulated time (numpy only).

How a simulation driver uses it, per tick ``t`` (ids are ints, positions world x, y metres)::

    from channel import (CodecConfig, GridHeader, decode_feature, encode_feature, load_preset)

    cfg = load_preset("dsrc")                       # or ChannelConfig.from_dict(...)
    queue = cfg.make_queue(seed)                    # links + delivery + log
    poses = cfg.make_pose_model(seed)               # per-sender reported-pose error
    codec = CodecConfig(dtype="int8", sparsity={"topk": 0.1}, zstd_level=3)
    grid = GridHeader(x_min, y_min, x_max, y_max, cell_size)   # from models.GridSpec

    for s in senders:
        reported, noise = poses.perturb(s, true_pose[s])
        msg = encode_feature(feature[s], reported, t, s, grid, codec)   # -> bytes
        for r in receivers:
            if r != s:
                queue.send(msg, s, r, t, xy[s], xy[r], pose_noise=noise)
    for r in egos:
        for delivery in queue.arrived(r, t):        # ordered; too-old ones already dropped
            dec = decode_feature(delivery.message)  # dense (C,H,W), mask, header (pose, t_send)
    queue.write_log("channel_log.parquet")          # one row per message, LOG_SCHEMA

``decode_feature`` raises only :class:`CodecError` (a ``ValueError``) for bad input.
"""

from channel.codec import (
    FORMAT_VERSION,
    ByteStats,
    CodecConfig,
    CodecError,
    DecodedFeature,
    GridHeader,
    GridMismatchError,
    Header,
    byte_stats,
    decode_feature,
    encode_feature,
    peek_header,
)
from channel.delivery import LOG_SCHEMA, Delivery, DeliveryQueue, LogRecord
from channel.links import LatencyConfig, LinkConfig, LinkModel, LinkOutcome, LossConfig, RangeConfig
from channel.pose_error import (
    POSE_ERROR_LEVELS,
    PoseErrorConfig,
    PoseErrorModel,
    PoseNoise,
    apply_pose_noise,
    sample_pose_noise,
)
from channel.presets import ChannelConfig, list_presets, load_preset
from channel.sparsify import select_mask

__all__ = [
    "FORMAT_VERSION",
    "LOG_SCHEMA",
    "POSE_ERROR_LEVELS",
    "ByteStats",
    "ChannelConfig",
    "CodecConfig",
    "CodecError",
    "DecodedFeature",
    "Delivery",
    "DeliveryQueue",
    "GridHeader",
    "GridMismatchError",
    "Header",
    "LatencyConfig",
    "LinkConfig",
    "LinkModel",
    "LinkOutcome",
    "LogRecord",
    "LossConfig",
    "PoseErrorConfig",
    "PoseErrorModel",
    "PoseNoise",
    "RangeConfig",
    "apply_pose_noise",
    "byte_stats",
    "decode_feature",
    "encode_feature",
    "list_presets",
    "load_preset",
    "peek_header",
    "sample_pose_noise",
    "select_mask",
]
