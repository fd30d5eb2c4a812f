"""The application: the command line, and the wiring that builds a worker or a server
from the configuration."""
