"""The workstation toolchain (dataset, training, int8 conversion, verification, reports): issue #3.

It imports the device's frontend (`edge.dsp.mfcc`) so training and device features are one code.
"""
