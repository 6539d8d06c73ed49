"""The workstation toolchain: datasets, the validation protocol, training, int8 conversion,
verification, evaluation and reports.

It imports the device's code for everything audio (`edge.dsp`), so training and device features
are one code. TensorFlow is configured here, before any module of the package can import it.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf_keras: Keras 3 cannot make an int8 LSTM
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI and the like;
# on this project's AVX2 workstations they train the CNN-LSTM 2× faster (1.8 against 3.6 ms
# per window, measured), with rounding that differs in the last bits.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
