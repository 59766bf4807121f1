"""The V2X wire and air: codec, link models, pose error, delivery in simulated time (numpy only).

How a simulation driver uses it, per tick ``t`` (ids are ints, positions world x, y metres)::

    from channel import (CodecConfig, GridHeader, decode_feature, encode_feature, load_preset)

    cfg = load_preset("dsrc")                       # or ChannelConfig.from_dict(...)
    channel = cfg.make_channel(seed)                # shared medium + links + receptions + logs
    poses = cfg.make_pose_model(seed)               # per-sender reported-pose error
    codec = CodecConfig(dtype="int8", sparsity={"topk": 0.1}, zstd_level=3)
    grid = GridHeader(x_min, y_min, x_max, y_max, cell_size)   # from models.GridSpec

    channel.update(t, xy)                           # {id: (x, y)}: where everyone is now
    for s in senders:
        reported, noise = poses.perturb(s, true_pose[s])
        msg = encode_feature(feature[s], reported, t, s, grid, codec)   # -> bytes
        channel.broadcast(msg, s, t, listeners, pose_noise=noise)      # one transmission
    for r in egos:
        for delivery in channel.arrived(r, t + dt): # ordered; too-old ones already dropped
            dec = decode_feature(delivery.message)  # dense (C,H,W), mask, header (pose, t_send)
    channel.log_table()                             # one row per reception, LOG_SCHEMA
    channel.transmission_table()                    # one row per broadcast, TX_SCHEMA
    channel.busy_table(dt)                          # busy ratio per vehicle and tick

The broadcast medium (:mod:`channel.medium`) shares air time between senders within carrier
sense range (CSMA with a seeded back-off); each sender's transmit queue holds only its newest
message. :class:`DeliveryQueue` is the older point-to-point model (every link its own
bandwidth and FIFO), kept for studies of a single link.

``decode_feature`` raises only :class:`CodecError` (a ``ValueError``) for bad input.
"""

from channel.broadcast import BUSY_SCHEMA, TX_SCHEMA, BroadcastChannel
from channel.codec import (
    ByteStats,
    CodecConfig,
    DecodedFeature,
    GridHeader,
    Header,
    byte_stats,
    decode_feature,
    encode_feature,
    peek_header,
)
from channel.delivery import LOG_SCHEMA, Delivery, DeliveryQueue, LogRecord
from channel.inbox import Held, ReceiveBuffer
from channel.links import LatencyConfig, LinkConfig, LinkModel, LinkOutcome, LossConfig, RangeConfig
from channel.medium import Medium, MediumConfig, Transmission
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
from channel.wire import FORMAT_VERSION, CodecError, GridMismatchError

__all__ = [
    "BUSY_SCHEMA",
    "FORMAT_VERSION",
    "LOG_SCHEMA",
    "POSE_ERROR_LEVELS",
    "TX_SCHEMA",
    "BroadcastChannel",
    "ByteStats",
    "ChannelConfig",
    "CodecConfig",
    "CodecError",
    "DecodedFeature",
    "Delivery",
    "DeliveryQueue",
    "GridHeader",
    "GridMismatchError",
    "Held",
    "Header",
    "LatencyConfig",
    "LinkConfig",
    "LinkModel",
    "LinkOutcome",
    "LogRecord",
    "LossConfig",
    "Medium",
    "MediumConfig",
    "PoseErrorConfig",
    "PoseErrorModel",
    "PoseNoise",
    "RangeConfig",
    "ReceiveBuffer",
    "Transmission",
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
