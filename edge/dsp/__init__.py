"""Signal processing on the device: resampling, filtering, cycle segmentation, features."""
