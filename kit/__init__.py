"""kit: a TensorFlow/Keras kit for Kaggle image-classification competitions."""

__version__ = "0.1.0"
