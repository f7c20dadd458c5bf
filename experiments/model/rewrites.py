"""Layer rewrites: the same functions as bert4keras's GELU, LayerNorm and attention, computed
in a way that is cheaper to differentiate (twice, for gradient penalty), plus float32
LayerNorms under mixed precision and keyed dropout. ``prepare_model`` applies them to a built
model in place, before training."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from experiments.model import dropout

SQRT_2 = float(np.sqrt(2.0))
INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))


@tf.custom_gradient
def gelu(x):
    """bert4keras's erf GELU x Phi(x), bit for bit, with its first and second derivatives
    in closed form (Phi + x phi, and phi (2 - x^2)): autodiff through erf builds several
    times the elementwise ops, and gradient penalty differentiates the backward pass again."""
    cdf = 0.5 * (1.0 + tf.math.erf(x / SQRT_2))
    return x * cdf, lambda dy: _gelu_backward(dy, x, cdf)


@tf.custom_gradient
def _gelu_backward(dy, x, cdf):
    pdf = INV_SQRT_2PI * tf.exp(-0.5 * tf.square(x))
    slope = cdf + x * pdf

    def grad(ddx):  # cdf gets None: its dependence on x is in the second-derivative term
        return ddx * slope, ddx * dy * pdf * (2.0 - tf.square(x)), None

    return dy * slope, grad


def layer_norm_call(layer):
    """bert4keras's LayerNormalization.call with ``x * rsqrt(var + eps)`` for its
    ``divide_no_nan(x, sqrt(var + eps))``: the same function (eps > 0, so no division by
    zero), but the gradient w.r.t. the scale is one product instead of three divisions."""
    from bert4keras.layers import ScaleOffset

    def call(inputs):
        x = inputs - tf.reduce_mean(inputs, axis=-1, keepdims=True)
        x = x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + layer.epsilon)
        return ScaleOffset.call(layer, x)  # gamma, beta

    return call


def attention_call(layer):
    """bert4keras's MultiHeadAttention.pay_attention_to for plain BERT attention (no
    biases, softmax), computing the same function more cheaply to differentiate twice:
    batched matmuls in (batch, head, position, dim) layout instead of einsums that
    transpose their operands on every call; the 1/sqrt(d) scale applied to the queries
    (half the elements of the scores; a power of two for BERT's d = 64, so exact); and
    padded keys masked by adding -inf instead of ``where(mask, a, -inf)``, whose gradient
    (and GP's gradient of that) is a select and a broadcast per call rather than nothing."""
    original = type(layer).pay_attention_to

    def pay_attention_to(inputs, mask=None, **kwargs):
        if kwargs.get("a_bias") or kwargs.get("p_bias") or layer.normalization != "softmax":
            # bert4keras's own attention, with the Dropout it builds inside drawing from dropout.dropout
            with dropout.keyed_attention_dropout():
                return original(layer, inputs, mask, **kwargs)
        q, k, v = (tf.transpose(t, [0, 2, 1, 3]) for t in inputs[:3])  # b, h, j, d
        if layer.attention_scale:
            q = q * tf.cast(layer.key_size**-0.5, q.dtype)
        a = tf.matmul(q, k, transpose_b=True)
        keys = mask[1] if mask else None  # (b, k): the keys' padding
        if keys is not None:  # a constant of the batch: no gradient flows into it
            a = a + tf.cast(tf.where(tf.cast(keys, tf.bool), 0.0, -np.inf), a.dtype)[:, None, None, :]
        probs = tf.nn.softmax(a, axis=-1)
        if layer.attention_dropout:  # keyed by (seed, epoch, step), see experiments/model/dropout.py
            probs = dropout.dropout(probs, layer.attention_dropout, kwargs.get("training"))
        return tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), a

    return pay_attention_to


def prepare_model(model, precision: str = "float32") -> None:
    """Adjust a built bert4keras classifier in place, before training (experiments/commands/run.py, machine/bench.py):

    - its GELUs, LayerNorms and attentions become the equivalent, cheaper-to-differentiate
      ``gelu``, ``layer_norm_call`` and ``attention_call`` above: gradient penalty's double
      backward spends its time beyond 2x a baseline step in exactly such ops (README, Speed);
    - under a mixed policy its LayerNorms compute in float32, as Keras's own does: in
      float16 bert4keras's epsilon 1e-12 rounds to 0 and x**2 overflows above |x| = 256;
    - its Dropout layers (and the attentions' dropout) draw from stateless random ops keyed by
      (seed, epoch, step), the same with and without XLA (experiments/model/dropout.py).
    """
    from bert4keras.layers import FeedForward, LayerNormalization, MultiHeadAttention

    for layer in model.layers:
        if isinstance(layer, MultiHeadAttention):
            layer.pay_attention_to = attention_call(layer)
        elif (
            isinstance(layer, LayerNormalization) and layer.zero_mean and layer.unit_variance and not layer.conditional
        ):
            layer.call = layer_norm_call(layer)
            if precision != "float32":
                layer._set_dtype_policy(keras.mixed_precision.Policy("float32"))  # read at every call
        elif isinstance(layer, FeedForward) and layer.i0_dense.activation.__name__ == "gelu_erf":
            layer.i0_dense.activation = gelu
        elif isinstance(layer, keras.layers.Dropout):
            layer.call = dropout.dropout_call(layer)
