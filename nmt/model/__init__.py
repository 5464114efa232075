"""The GRU encoder-decoder with Bahdanau attention, as Keras 3 layers."""

from nmt.model.attention import BahdanauAttention
from nmt.model.decoder import FeedAttentionDecoder, PostAttentionDecoder
from nmt.model.encoder import Encoder
from nmt.model.seq2seq import OutputProjection, Seq2Seq, build_model

__all__ = ["BahdanauAttention", "Encoder", "FeedAttentionDecoder", "OutputProjection",
           "PostAttentionDecoder", "Seq2Seq", "build_model"]
