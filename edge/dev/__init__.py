"""Helpers for trying and testing lungedge on a workstation (the demo, a private Mosquitto):
the daemon never imports them."""
