"""The workstation toolchain (dataset, training, int8 conversion, verification, reports): issue #3.

It imports the device's frontend (`edge.dsp.frontend`) so training and device features are one code.
"""
