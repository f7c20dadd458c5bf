"""model.dropout.keyed_attention_dropout: the explicit swap of bert4keras's inline attention Dropout."""

import bert4keras.layers
import numpy as np
import pytest
import tensorflow as tf

from experiments.model import dropout


def test_within_the_block_bert4keras_builds_keyed_dropout_and_after_it_its_own_again():
    own = bert4keras.layers.Dropout
    x = tf.ones([4, 64])
    dropout.KEYS.start_epoch(seed=3, epoch=1)
    with dropout.keyed_attention_dropout(), dropout.KEYS.step():  # draw 0 of step 0 of (seed 3, epoch 1)
        layer = bert4keras.layers.Dropout(0.5)  # what MultiHeadAttention.pay_attention_to builds inline
        assert isinstance(layer, dropout.KeyedDropout) and layer.rate == 0.5
        dropped = layer(x, training=True).numpy()
    assert bert4keras.layers.Dropout is own
    dropout.KEYS.start_epoch(seed=3, epoch=1)
    with dropout.KEYS.step():  # the same key and draw number: the same mask, drawn directly
        expected = dropout.dropout(x, 0.5, training=True).numpy()
    np.testing.assert_array_equal(dropped, expected)
    assert set(np.unique(dropped)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - rate)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())  # inference: untouched


def test_the_swap_is_undone_when_the_block_raises():
    own = bert4keras.layers.Dropout
    with pytest.raises(ZeroDivisionError):
        with dropout.keyed_attention_dropout():
            raise ZeroDivisionError
    assert bert4keras.layers.Dropout is own
