"""The HTTP API: Flask + flask-smorest, every error an RFC 9457 problem."""
