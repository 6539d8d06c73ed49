"""The monitoring station: ingest of what devices publish, its storage, and the web UI.

Installed with `pip install 'lungedge[station]'`; the device never imports it. It reads the
device's payload definitions from `edge`.
"""
