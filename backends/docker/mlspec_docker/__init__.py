"""mlspec-docker: the Docker backend of mlspec (``backend=docker``).

Importing this package is cheap: the Docker SDK (``docker``) is imported only inside the backend's methods.
"""

__version__ = "0.1.0"
