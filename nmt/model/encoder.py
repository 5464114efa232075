"""The encoder: embeddings, stacked bidirectional GRUs and the bridge to the decoder state.

The GRUs are plain ``keras.layers.GRU`` with the cuDNN-compatible defaults (``reset_after=True``,
tanh/sigmoid, no recurrent dropout), so Keras runs the fused cuDNN kernel on GPUs; on CPUs the
same weights run through :func:`nmt.model.gru.fused_gru`. Sentences are right-padded: each
direction stops at the sentence's last real piece, whatever the padding.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from nmt.model import gru
from nmt.model.ops import Dense, embed


@keras.saving.register_keras_serializable("nmt")
class Encoder(keras.layers.Layer):
    """Bidirectional GRU encoder with a dense+tanh bridge to the decoder's initial state."""

    def __init__(self, vocab_size: int, embedding_dim: int, units: int, layers: int,
                 decoder_units: int, dropout: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.num_layers, self.decoder_units, self.dropout_rate = layers, decoder_units, dropout
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        # One attribute per layer: tf.train.Checkpoint does not follow Keras' tracked lists.
        for i in range(layers):
            setattr(self, f"bigru_{i}", keras.layers.Bidirectional(
                keras.layers.GRU(units, return_sequences=True, return_state=True), name=f"bigru_{i}"))
        self.dropout = keras.layers.Dropout(dropout)
        self.bridge = Dense(decoder_units, activation="tanh", name="bridge")

    def frozen_weights(self, kernel_dtype: tf.DType | str) -> dict[str, tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
        """Copies of the GRUs' weights for a model whose weights no longer change (a loaded model):
        per layer and direction ``(kernel, recurrent kernel, bias)``, the kernels in ``kernel_dtype``
        and the biases float32. Pass them to :meth:`call` as ``frozen``."""
        copies = {}
        for i in range(self.num_layers):
            layer = getattr(self, f"bigru_{i}")
            for direction, gru_layer in (("forward", layer.forward_layer), ("backward", layer.backward_layer)):
                cell = gru_layer.cell
                copies[f"bigru_{i}_{direction}"] = (tf.cast(cell.kernel, kernel_dtype),
                                                    tf.cast(cell.recurrent_kernel, kernel_dtype),
                                                    tf.cast(cell.bias, tf.float32))
        return copies

    def build(self, input_shape) -> None:
        """Create the weights from the source ids' shape [B, S] alone (no pass over data)."""
        self.embedding.build(input_shape)
        width = self.embedding_dim
        for i in range(self.num_layers):
            getattr(self, f"bigru_{i}").build((None, None, width))
            width = 2 * self.units
        self.bridge.build((None, 2 * self.units))
        self.built = True

    def call(self, src: tf.Tensor, training: bool = False,
             frozen: dict[str, tuple[tf.Tensor, tf.Tensor, tf.Tensor]] | None = None
             ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Encode ids [B, S] (0 = padding) into ``(memory [B, S, 2U], mask [B, S], state [B, D])``.

        ``frozen`` (:meth:`frozen_weights`) replaces the GRUs' variables in the CPU loop
        (a loaded model's bfloat16 copies); GPUs run Keras' layers on the variables.
        """
        frozen = frozen or {}
        mask = tf.not_equal(src, 0)
        x = self.dropout(embed(self.embedding, src), training=training)
        fused = not gru.cudnn_available()
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), 1)
        for i in range(self.num_layers):
            layer = getattr(self, f"bigru_{i}")
            if fused:  # the same weights through the fused CPU loop (nmt.model.gru)
                x_fw, fw = gru.fused_gru(layer.forward_layer, x, lengths=lengths, training=training,
                                         frozen=frozen.get(f"bigru_{i}_forward"))
                x_bw, bw = gru.fused_gru(layer.backward_layer, x, lengths=lengths, reverse=True, training=training,
                                         frozen=frozen.get(f"bigru_{i}_backward"))
                x = tf.concat([x_fw, x_bw], -1)
            else:
                x, fw, bw = layer(x, mask=mask, training=training)
            x = self.dropout(x, training=training)
        state = self.bridge(tf.concat([fw, bw], -1))
        return x, mask, state

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim,
                "units": self.units, "layers": self.num_layers, "decoder_units": self.decoder_units,
                "dropout": self.dropout_rate}
