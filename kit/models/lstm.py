"""Stacked LSTMs (Hochreiter & Schmidhuber 1997) reading an image row by row.

The image becomes a sequence of S rows, each row a vector of S*3 pixel values (the "pixel-row" reading
used for sequential MNIST, e.g. Le et al. 2015). Every LSTM but the last returns its whole sequence to
the next one; the last one's final state summarises the image for the classifier. Dropout
(``model.dropout``) acts on each LSTM's inputs (Zaremba et al. 2014: not on the recurrent connections,
which also keeps the fast cuDNN kernel usable on GPU) and before the classifier.

Options (``model.options``): ``units`` (one LSTM per entry, default [128, 128]) and ``bidirectional``
(read the rows top-down and bottom-up, default false).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kit.models.common import check_options, classifier_output, image_input, positive_ints

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig

DEFAULTS = {"units": [128, 128], "bidirectional": False}


def build(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """Rescale, reshape (S, S, 3) -> (S, S*3) and run stacked LSTMs over the rows."""
    import keras

    layers = keras.layers
    options = check_options(cfg, DEFAULTS)
    units = positive_ints(cfg, "units", options["units"])
    size = cfg.image_size

    inputs = image_input(cfg)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = layers.Reshape((size, size * 3), name="rows")(x)
    for i, width in enumerate(units, start=1):
        last = i == len(units)
        rnn = layers.LSTM(width, return_sequences=not last, dropout=cfg.dropout, name=f"lstm{i}")
        x = layers.Bidirectional(rnn, name=f"bilstm{i}")(x) if options["bidirectional"] else rnn(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
    outputs = classifier_output(x, num_classes)
    return keras.Model(inputs, outputs, name="lstm")
