"""The serial link to stethoscope firmware (framed PCM protocol, decoder, simulator): issue #5."""
