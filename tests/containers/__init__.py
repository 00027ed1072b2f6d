"""The image and the compose file on a real, private Docker engine; Prometheus for real."""
